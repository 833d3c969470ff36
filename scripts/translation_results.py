"""Collects finished translation runs into results/translation/ and the table of
docs/translation.md.

    python scripts/translation_results.py workdirs/translation/bible_en_fr ...

For each workdir (a finished `experiments.main` run of configs/translation.py) this copies
the files anyone needs to check or rescore it (scores.json, config.json, metrics.jsonl,
the test sources, references and hypotheses, the plots; not the checkpoints) into
results/translation/NAME/, then rewrites the table between the markers in
docs/translation.md from every results/translation/*/scores.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'results' / 'translation'
DOC = ROOT / 'docs' / 'translation.md'
BEGIN, END = '<!-- results:begin -->', '<!-- results:end -->'
FILES = ('scores.json', 'config.json', 'metrics.jsonl', 'attention.png',
         'learning_curves.png', 'test.src.txt', 'test.ref.txt', 'test.hyp.greedy.txt',
         'test.hyp.beam.txt')


def collect(workdir: pathlib.Path, results: pathlib.Path) -> None:
  if not (workdir / 'scores.json').exists():
    raise SystemExit(f'{workdir} has no scores.json: not a finished translation run.')
  out = results / workdir.name
  out.mkdir(parents=True, exist_ok=True)
  for name in FILES:
    if (workdir / name).exists():
      shutil.copy2(workdir / name, out / name)


def table(results: pathlib.Path) -> str:
  rows = ['| run | corpus, direction | attention | test sentences | BLEU greedy | BLEU beam '
          '| chrF greedy | chrF beam | BLEU / chrF copy | perplexity | params | command |',
          '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |']
  for path in sorted(results.glob('*/scores.json')):
    s = json.loads(path.read_text())
    config = json.loads((path.parent / 'config.json').read_text())
    d = config['data']
    arg = ('' if d['corpus'] == 'bible' else f"{d['corpus']}:") + f"{d['src']}-{d['tgt']}"
    if s['attention'] == 'none':
      arg += ':noattn'
    command = (f'`python -m experiments.main --config=configs/translation.py:{arg} '
               f'--workdir=workdirs/translation/{path.parent.name}')
    if s['attention'] not in ('none', 'general'):
      command += f" --config.model.attention={s['attention']}"
    command += '`'
    rows.append(
        f"| [{path.parent.name}](../{path.parent.relative_to(ROOT)}) | {s['corpus']} "
        f"{s['direction']} | {s['attention']} | {s['num_test']:,} | "
        f"{s['greedy']['bleu']:.2f} | {s['beam']['bleu']:.2f} | "
        f"{s['greedy']['chrf']:.2f} | {s['beam']['chrf']:.2f} | "
        f"{s['copy']['bleu']:.2f} / {s['copy']['chrf']:.2f} | {s['test_perplexity']:.2f} | "
        f"{s['num_params'] / 1e6:.2f} M | {command} |")
  return '\n'.join(rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workdirs', nargs='*', type=pathlib.Path)
  parser.add_argument('--results', type=pathlib.Path, default=RESULTS)
  parser.add_argument('--doc', type=pathlib.Path, default=DOC)
  args = parser.parse_args(argv)
  for workdir in args.workdirs:
    collect(workdir, args.results)
  text = table(args.results)
  print(text)
  doc = args.doc.read_text()
  if BEGIN not in doc or END not in doc:
    raise SystemExit(f'{args.doc} lacks the markers {BEGIN} ... {END}.')
  head, rest = doc.split(BEGIN, 1)
  args.doc.write_text(head + BEGIN + '\n' + text + '\n' + END + rest.split(END, 1)[1])


if __name__ == '__main__':
  main()
