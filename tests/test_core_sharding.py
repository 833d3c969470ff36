"""The layers under an Explicit-sharding mesh (jax.make_mesh's default axis type).

Runs in a subprocess with 4 CPU devices: the batch is sharded over 'data', parameters are
replicated, and outputs and parameter gradients must equal the unsharded computation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import FAST_COMPILE

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from lstm_jax import GRU, LSTM

    mesh = jax.make_mesh((4,), ('data',))
    assert 'Explicit' in str(mesh.axis_types), mesh.axis_types
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 6, 3)), jnp.float32)
    lengths = jnp.asarray([6, 0, 3, 5, 1, 6, 2, 4])
    models = {
        'fused': (LSTM(hidden_size=5), None),
        'fused_remat_lengths': (LSTM(hidden_size=5, remat=True), lengths),
        'bidirectional_2_layers': (LSTM(hidden_size=5, num_layers=2, bidirectional=True),
                                   lengths),
        'peepholes_generic_path': (LSTM(hidden_size=5, peepholes=True), lengths),
        'gru': (GRU(hidden_size=5), lengths),
    }

    def loss(variables, model, x, lengths):
      outputs, final = model.apply(variables, x, seq_lengths=lengths)
      return (outputs ** 2).sum() + sum((a ** 2).sum() for a in jax.tree.leaves(final))

    for name, (model, lens) in models.items():
      variables = model.init(jax.random.key(1), x)
      want_out = model.apply(variables, x, seq_lengths=lens)[0]
      want_grad = jax.grad(loss)(variables, model, x, lens)
      with jax.set_mesh(mesh):
        xs = jax.device_put(x, NamedSharding(mesh, P('data')))
        ls = None if lens is None else jax.device_put(lens, NamedSharding(mesh, P('data')))
        vs = jax.device_put(variables, NamedSharding(mesh, P()))
        out = jax.jit(lambda v, x, l: model.apply(v, x, seq_lengths=l)[0])(vs, xs, ls)
        grad = jax.jit(jax.grad(loss), static_argnums=1)(vs, model, xs, ls)
      assert out.sharding.spec[0] == 'data', (name, out.sharding)
      np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6, err_msg=name)
      for got, want in zip(jax.tree.leaves(grad), jax.tree.leaves(want_grad)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
      print('ok', name)
''')


def test_layers_under_explicit_sharding_mesh_match_unsharded():
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count=4 {FAST_COMPILE}',
             JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
  assert proc.stdout.count('ok ') == 5, proc.stdout
