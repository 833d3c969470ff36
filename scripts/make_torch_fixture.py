"""Writes tests/fixtures/torch_lstm.npz: weights, inputs and outputs of real torch runs.

    .venv/bin/python scripts/make_torch_fixture.py      # needs torch (WITH_TORCH=1 setup)

For each config the file holds, under '<config>/...':
  'state_dict/<torch key>'  the module's state_dict, float32;
  'x'        <float32>[batch, time, features] (batch-first; zero past each length);
  'lengths'  <int32>[batch], mixed, all >= 1 (torch's packing needs that);
  'output'   <float32>[batch, time, directions * (proj_size or hidden)], zero-padded;
  'h_n'      <float32>[num_layers * directions, batch, proj_size or hidden];
  'c_n'      <float32>[num_layers * directions, batch, hidden] (LSTM only).
torch runs with pack_padded_sequence(..., enforce_sorted=False) so each sequence stops at
its length, then pad_packed_sequence(total_length=time). 'metadata' is a JSON string with
the torch version, the seed and the configs. The tests read it without torch.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
import torch

SEED = 20240611
CONFIGS: dict[str, dict] = {
    'lstm_1layer': dict(cell='lstm', input_size=3, hidden_size=4, num_layers=1,
                        bidirectional=False, proj_size=0, batch=3, time=5),
    'lstm_2layer_bidirectional': dict(cell='lstm', input_size=3, hidden_size=4, num_layers=2,
                                      bidirectional=True, proj_size=0, batch=3, time=6),
    'lstm_proj': dict(cell='lstm', input_size=3, hidden_size=5, num_layers=2,
                      bidirectional=False, proj_size=3, batch=3, time=5),
    'gru_bidirectional': dict(cell='gru', input_size=3, hidden_size=4, num_layers=2,
                              bidirectional=True, proj_size=0, batch=3, time=5),
    'rnn_tanh': dict(cell='rnn', input_size=3, hidden_size=4, num_layers=1,
                     bidirectional=False, proj_size=0, batch=3, time=5),
}


def build(config: dict) -> torch.nn.Module:
  common = dict(input_size=config['input_size'], hidden_size=config['hidden_size'],
                num_layers=config['num_layers'], bidirectional=config['bidirectional'],
                batch_first=True)
  if config['cell'] == 'lstm':
    return torch.nn.LSTM(**common, proj_size=config['proj_size'])
  if config['cell'] == 'gru':
    return torch.nn.GRU(**common)
  return torch.nn.RNN(**common, nonlinearity='tanh')


def run(module: torch.nn.Module, x: np.ndarray, lengths: np.ndarray):
  """(output, h_n, c_n or None) of a packed run, output zero-padded to x's time."""
  packed = torch.nn.utils.rnn.pack_padded_sequence(
      torch.from_numpy(x), torch.from_numpy(lengths).long(), batch_first=True,
      enforce_sorted=False)
  with torch.no_grad():
    out, state = module(packed)
  out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=x.shape[1])
  h_n, c_n = state if isinstance(state, tuple) else (state, None)
  return out.numpy(), h_n.numpy(), None if c_n is None else c_n.numpy()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=str(pathlib.Path(__file__).resolve().parent.parent
                                           / 'tests' / 'fixtures' / 'torch_lstm.npz'))
  args = parser.parse_args()
  torch.manual_seed(SEED)
  rng = np.random.default_rng(SEED)
  arrays: dict[str, np.ndarray] = {}
  for name, config in CONFIGS.items():
    module = build(config).float().eval()
    batch, time = config['batch'], config['time']
    # Mixed lengths: one full, one short, one of length 1; the longest is not first.
    lengths = np.array([max(2, time - 2), time, 1][:batch], np.int32)
    x = rng.standard_normal((batch, time, config['input_size'])).astype(np.float32)
    x[np.arange(time)[None, :] >= lengths[:, None]] = 0.0
    out, h_n, c_n = run(module, x, lengths)
    for key, value in module.state_dict().items():
      arrays[f'{name}/state_dict/{key}'] = value.detach().numpy().astype(np.float32)
    arrays[f'{name}/x'] = x
    arrays[f'{name}/lengths'] = lengths
    arrays[f'{name}/output'] = out.astype(np.float32)
    arrays[f'{name}/h_n'] = h_n.astype(np.float32)
    if c_n is not None:
      arrays[f'{name}/c_n'] = c_n.astype(np.float32)
  metadata = dict(torch_version=torch.__version__, numpy_version=np.__version__,
                  seed=SEED, configs=CONFIGS, batch_first=True,
                  generator='scripts/make_torch_fixture.py')
  arrays['metadata'] = np.array(json.dumps(metadata, sort_keys=True))
  out_path = pathlib.Path(args.out)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(out_path, **arrays)
  print(f'wrote {out_path} ({out_path.stat().st_size} bytes, {len(CONFIGS)} configs)')


if __name__ == '__main__':
  main()
