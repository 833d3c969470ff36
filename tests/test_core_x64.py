"""`jax.test_util.check_grads` in float64, in a subprocess.

`jax_enable_x64` is process-global, so the checks run in a child Python with
JAX_ENABLE_X64=1 and report back as JSON; the pytest worker's float32 setting is never
touched. In float64 the JAX gradients (the fused custom VJP called directly, and autodiff
of the generic cells through the module) are checked against JAX's own finite differences
of first order in reverse mode, at check_grads' float64 tolerance
(atol = rtol = 1e-5 with eps = 1e-4 here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r'''
import json, sys, traceback
import jax, jax.numpy as jnp, numpy as np
from jax.test_util import check_grads
assert jax.config.jax_enable_x64
from lstm_jax import RNN, fused
from lstm_jax.unroll import valid_mask

results = {}
rng = np.random.default_rng(0)
B, T, F, H = 2, 3, 2, 2
lengths = jnp.asarray([3, 1])

def record(name, fn):
  try:
    fn()
    results[name] = 'ok'
  except Exception:
    results[name] = traceback.format_exc()[-2000:]

CASES = [(False, False, 1), (True, False, 2), (True, True, 3)]

def fused_case(masked, remat, unroll):
  a = [jnp.asarray(0.5 * rng.standard_normal(s)) for s in
       [(F, 4 * H), (H, 4 * H), (4 * H,), (T, B, F), (B, H), (B, H)]]
  valid = valid_mask(lengths, T) if masked else None
  def f(ik, rk, b, xs, h0, c0):
    (h, c), ys = fused.lstm(ik, rk, b, xs, valid, h0, c0, unroll=unroll, remat=remat)
    assert ys.dtype == jnp.float64
    return ys, h, c
  # The fused op has a custom VJP only: reverse mode.
  check_grads(jax.jit(f), a, order=1, modes=['rev'], eps=1e-4, atol=1e-5, rtol=1e-5)

for masked, remat, unroll in CASES:
  record(f'fused-masked{masked}-remat{remat}-unroll{unroll}',
         lambda: fused_case(masked, remat, unroll))

# B = 2: the cases above project the inputs before the loop (fused.HOIST_MAX_BATCH).
# This one takes the other forward, and the chunked backward of long sequences, forced
# on this short one: T = 3 is one head step, then one chunk of 2.
fused.HOIST_MAX_BATCH = 0
fused._backward_chunk = lambda time, batch: 2
record('fused-chunked-unhoisted-masked', lambda: fused_case(True, False, 1))

MODULES = {
  'peepholes_ln_proj_clip': dict(peepholes=True, layer_norm=True, proj_size=3, cell_clip=0.5),
  'cifg_fgr_niaf_noaf': dict(coupled=True, full_gate_recurrence=True, peepholes=True,
                             input_activation=False, output_activation=False),
  'nfg_zoneout_bidir': dict(forget_gate=False, zoneout_cell=0.3, zoneout_hidden=0.2,
                            bidirectional=True),
  'gru_2layer_bidir_residual': dict(cell_type='gru', num_layers=2, bidirectional=True,
                                    merge='sum', residual=True),
}

def module_case(opts):
  model = RNN(hidden_size=H, **opts)
  x = jnp.asarray(rng.standard_normal((B, T, H)))
  params = model.init(jax.random.key(0), x)['params']
  params = jax.tree.map(lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape)), params)
  assert all(l.dtype == jnp.float64 for l in jax.tree.leaves(params))
  def f(params, x):
    out, final = model.apply({'params': params}, x, seq_lengths=lengths)
    assert out.dtype == jnp.float64
    return out, final
  check_grads(jax.jit(f), (params, x), order=1, modes=['rev'], eps=1e-4, atol=1e-5, rtol=1e-5)

for name, opts in MODULES.items():
  record(f'module-{name}', lambda: module_case(opts))

json.dump(results, sys.stdout)
'''

CASES = [(False, False, 1), (True, False, 2), (True, True, 3)]
NAMES = [f'fused-masked{m}-remat{r}-unroll{u}' for m, r, u in CASES] + ['fused-chunked-unhoisted-masked'] + [
    f'module-{n}' for n in ('peepholes_ln_proj_clip', 'cifg_fgr_niaf_noaf',
                            'nfg_zoneout_bidir', 'gru_2layer_bidir_residual')]


def test_check_grads_float64():
  """One test (so that pytest-xdist runs the child once): every case must report 'ok'."""
  env = dict(os.environ, JAX_ENABLE_X64='1', JAX_PLATFORMS='cpu',
             PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-c', CHILD], capture_output=True, text=True,
                        env=env, cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(proc.stdout)
  assert sorted(results) == sorted(NAMES)
  failed = {k: v for k, v in results.items() if v != 'ok'}
  assert not failed, '\n\n'.join(f'{k}:\n{v}' for k, v in failed.items())
