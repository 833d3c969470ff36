"""Smoke test of benchmarks/lstm_speed.py: its --quick mode runs end to end on one tiny
workload, with the data-parallel lstm_jax variant, and writes well-formed JSON and markdown
(timings themselves are not checked); --device gpu without a GPU stops with the fix; the
speed-ups from given timings; the pause before each timing; masked workloads."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks import lstm_speed
from lstm_jax import parallel

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_lstm_speed_quick(tmp_path):
  pytest.importorskip('torch')
  out, md = tmp_path / 'results.json', tmp_path / 'results.md'
  cores = parallel.cpu_cores()
  # lstm_jax_dp splits the quick workload's batch of 4 over one host device per core.
  data_parallel = cores > 1 and 4 % cores == 0
  models = ['torch', 'lstm_jax', 'flax'] + (['lstm_jax_dp'] if data_parallel else [])
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.lstm_speed', '--quick', '--out', str(out),
       '--md', str(md), '--models', ','.join(models)],
      cwd=ROOT, capture_output=True, text=True, timeout=170)
  assert proc.returncode == 0, proc.stderr[-3000:]

  results = json.loads(out.read_text())
  env = results['environment']
  assert env['cores'] >= 1 and env['jax'] and env['torch']
  assert isinstance(env['malloc_tuned'], bool)
  (item,) = results['workloads']
  for model in models:
    for mode in ('train', 'infer'):
      entry = item['timings'][model][mode]
      assert len(entry['raw_ms']) == results['args']['repeats'] >= 2
      assert entry['median_ms'] > 0
      if model != 'torch':
        assert entry['compile_s'] is not None
  assert item['speedup']['train']['torch/lstm_jax'] > 0
  assert item['speedup']['train']['paired torch/lstm_jax'] > 0
  if data_parallel:
    assert len(env['jax_devices']) == cores
    assert item['speedup']['train']['torch/lstm_jax_dp'] > 0
    assert f'lstm_jax x{cores} devices ms' in md.read_text()

  memory = {(row['framework'], row['remat']): row for row in results['memory']}
  assert set(memory) == {('lstm_jax', False), ('lstm_jax', True), ('flax', False),
                         ('torch', False)}
  for key in (('lstm_jax', False), ('lstm_jax', True), ('flax', False)):
    assert memory[key]['xla']['temp_size_in_bytes'] > 0
  rss = memory[('torch', False)]['rss']  # --quick measures RSS (a subprocess) for torch only.
  assert 'error' not in rss, rss
  assert rss['first_step_peak_delta_bytes'] >= 0

  text = md.read_text()
  assert text == proc.stdout
  for heading in ('## Training step', '## Inference', '## JAX compile time', '## Peak memory'):
    assert heading in text


def test_gpu_mode_without_a_gpu_says_how_to_fix():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.lstm_speed', '--device', 'gpu', '--quick',
       '--no-memory'], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "--device gpu: JAX runs on 'cpu'" in proc.stderr
  assert 'jax[cuda' in proc.stderr


def test_paired_speedup_cancels_a_change_of_machine_speed():
  # lstm_jax takes 0.8x torch's time in every round, but the machine halved its speed
  # between torch's and lstm_jax's turn in round 3, so the medians (10 and 16 ms) fall in
  # different phases. Rounds 6-8 were discarded (other processes were busy).
  kept = [True] * 5 + [False] * 3
  timings = {'torch': {'train': dict(raw_ms=[10, 10, 10, 20, 20, 1, 1, 1], kept=kept,
                                     median_ms=10.0)},
             'lstm_jax': {'train': dict(raw_ms=[8, 8, 16, 16, 16, 10, 10, 10], kept=kept,
                                        median_ms=16.0)}}
  speedup = lstm_speed.speedups(timings)['train']
  assert speedup['torch/lstm_jax'] == pytest.approx(0.625)
  assert speedup['paired torch/lstm_jax'] == pytest.approx(1.25)


def test_each_timing_waits_for_the_previous_models_threads_to_settle(monkeypatch):
  spans = []  # (start, end) of each measurement, warm-ups first.
  measure = lstm_speed._measure

  def recorded(bench, mode, iters):
    start = time.perf_counter()
    result = measure(bench, mode, iters)
    spans.append((start, time.perf_counter()))
    return result

  def build(name, w, device, unroll):
    return lstm_speed.Bench(train=lambda: time.sleep(0.001), infer=None)

  monkeypatch.setattr(lstm_speed, '_measure', recorded)
  monkeypatch.setattr(lstm_speed, 'build', build)
  repeats, settle_s = 3, 0.03
  out = lstm_speed.time_workload(lstm_speed.QUICK_WORKLOAD, ('torch', 'lstm_jax'), ('train',),
                                 repeats, target_s=0.002, min_iters=1, max_iters=3,
                                 log=lambda _: None, settle_s=settle_s)
  assert [len(out[m]['train']['raw_ms']) for m in ('torch', 'lstm_jax')] == [repeats] * 2
  timed = spans[-2 * repeats - 1:]  # The rounds, after the last warm-up call.
  gaps = [start - end for (_, end), (start, _) in zip(timed, timed[1:])]
  assert min(gaps) >= settle_s


def test_masked_workloads_give_every_model_the_same_lengths():
  w = lstm_speed.Workload(3, 8, 4, 5, 1, masked=True)
  lengths = lstm_speed.sequence_lengths(w)
  np.testing.assert_array_equal(lengths, lstm_speed.sequence_lengths(w))  # Seeded.
  assert lengths.shape == (3,) and lengths.min() >= 4 and lengths.max() <= 8
  assert lengths.min() < 8, 'this seed should give some padding to test'
  padding = np.arange(8)[None, :] >= lengths[:, None]
  outputs = {'lstm_jax': lstm_speed.build_lstm_jax(w).infer()[0]}
  if lstm_speed.have_torch():
    outputs['torch'] = lstm_speed.build_torch(w).infer()[0].numpy()
  for name, out in outputs.items():
    out = np.asarray(out)
    assert out.shape == (3, 8, 5), name
    assert np.all(out[padding] == 0) and np.all(out[~padding] != 0), name
  assert w.name.endswith(' masked') and 'masked' not in w._replace(masked=False).name
