"""Corpus BLEU and chrF of detokenised text with sacrebleu, and rescoring a workdir.

    from experiments.translation import scoring
    scoring.corpus_scores(hypotheses, references)
    # {'bleu': 31.2, 'chrf': 55.0, 'bp': 0.97, 'sys_len': ..., 'ref_len': ...,
    #  'bleu_signature': 'nrefs:1|case:mixed|eff:no|tok:13a|...', 'chrf_signature': ...}

sacrebleu's defaults (BLEU: 13a tokenisation, exponential smoothing, cased; chrF: n=6
characters, beta 2, no word n-grams), one reference per sentence. The signatures go into
scores.json so the figures can be reproduced. To rescore a finished run from its files:

    python -m experiments.translation.scoring WORKDIR
    sacrebleu WORKDIR/test.ref.txt -i WORKDIR/test.hyp.beam.txt -m bleu chrf
"""

from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF

# The files `report` writes, one line per test example in split order.
SOURCE_FILE = 'test.src.txt'
REFERENCE_FILE = 'test.ref.txt'
HYPOTHESIS_FILES = {'greedy': 'test.hyp.greedy.txt', 'beam': 'test.hyp.beam.txt'}


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
  """Corpus BLEU and chrF (0-100) of `hypotheses` against one reference each.

  Args:
    hypotheses, references: detokenised sentences, aligned, same length.

  Returns:
    {'bleu', 'chrf', 'bp' (brevity penalty), 'sys_len', 'ref_len' (13a tokens),
     'bleu_signature', 'chrf_signature'}.
  """
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses for {len(references)} references.')
  hypotheses, references = list(hypotheses), [list(references)]
  bleu, chrf = BLEU(), CHRF()
  b = bleu.corpus_score(hypotheses, references)
  c = chrf.corpus_score(hypotheses, references)
  return {'bleu': round(float(b.score), 4), 'chrf': round(float(c.score), 4),
          'bp': round(float(b.bp), 4), 'sys_len': int(b.sys_len), 'ref_len': int(b.ref_len),
          'bleu_signature': str(bleu.get_signature()),
          'chrf_signature': str(chrf.get_signature())}


def score_systems(systems: dict[str, Sequence[str]], references: Sequence[str]) -> dict:
  """{name: corpus_scores(hypotheses, references)} for each system."""
  return {name: corpus_scores(hyps, references) for name, hyps in systems.items()}


def copy_baseline(sources: Sequence[str], references: Sequence[str]) -> dict:
  """Scores of the copy-the-source baseline: the source sentence as the hypothesis.
  Names, numbers and cognates shared by both languages give it a non-zero floor."""
  return corpus_scores(sources, references)


def read_lines(path: str) -> list[str]:
  """The lines of a UTF-8 text file written by `write_lines`, without newlines."""
  with open(path, encoding='utf-8') as f:
    return f.read().split('\n')[:-1]


def write_lines(path: str, lines: Sequence[str]) -> None:
  """One sentence per line; newlines inside a sentence become spaces so that line i is
  always example i."""
  with open(path, 'w', encoding='utf-8') as f:
    for line in lines:
      f.write(line.replace('\r', ' ').replace('\n', ' ') + '\n')


def rescore(workdir: str) -> dict:
  """Scores the hypothesis files of a finished run (and the copy baseline) from disk."""
  refs = read_lines(os.path.join(workdir, REFERENCE_FILE))
  systems = {name: read_lines(os.path.join(workdir, f))
             for name, f in HYPOTHESIS_FILES.items()
             if os.path.exists(os.path.join(workdir, f))}
  systems['copy'] = read_lines(os.path.join(workdir, SOURCE_FILE))
  return score_systems(systems, refs)


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit('usage: python -m experiments.translation.scoring WORKDIR')
  print(json.dumps(rescore(sys.argv[1]), indent=2))
