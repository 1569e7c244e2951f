"""Make a Stateful GSM-Symbolic file from published GSM-Symbolic rows (apple/ml-gsm-symbolic's
``generated_data/GSM_p1.jsonl`` / ``GSM_p2.jsonl``): the problem's statements become the persistent
context and its last sentence, the question, becomes the query, as the sleep-time compute paper
builds Stateful GSM-Symbolic. The published Stateful GSM-Symbolic (letta-ai, on Hugging Face) is not
reachable from this machine; its rows have the same three fields, so `bench/real_llm.py --corpus`
and `sleeptime ingest` read either.

    .venv/bin/python bench/stateful_gsm.py GSM_p2.jsonl out/gsm/stateful_p2.jsonl --instances 1

GSM-Symbolic's data is CC BY-NC-ND 4.0: this script writes a derived file for local measurement
and nothing of it is committed here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# A sentence ends at . ! or ? followed by space and a capital letter or a digit (not "3.5", "Mr. X"
# is rare in GSM problems and would only move a clause into the context).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def split_question(problem: str) -> tuple[str, str] | None:
    """(context, question): everything before the last sentence, and the last sentence. None when
    the problem is one sentence or its last sentence asks nothing."""
    sentences = _SENTENCE_END.split(problem.strip())
    if len(sentences) < 2 or not sentences[-1].rstrip().endswith("?"):
        return None
    return " ".join(sentences[:-1]).strip(), sentences[-1].strip()


def convert(rows, instances: int) -> tuple[list[dict], int]:
    out, skipped = [], 0
    for row in rows:
        if int(row.get("instance", 0)) >= instances:
            continue
        parts = split_question(row["question"])
        if parts is None:
            skipped += 1
            continue
        context, question = parts
        out.append({"id": row["id"], "instance": row.get("instance", 0),
                    "stateful_gsm_symbolic_context": context, "stateful_gsm_symbolic_question": question,
                    "answer": row["answer"]})
    return out, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="GSM-Symbolic JSONL (question, answer, id, instance)")
    parser.add_argument("target", type=Path, help="Stateful GSM-Symbolic JSONL to write")
    parser.add_argument("--instances", type=int, default=1, help="filled-in copies per template to keep (from 0)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.source.read_text().splitlines() if line.strip()]
    out, skipped = convert(rows, args.instances)
    args.target.parent.mkdir(parents=True, exist_ok=True)
    args.target.write_text("".join(json.dumps(r) + "\n" for r in out))
    print(f"{len(out)} rows written to {args.target}; {skipped} skipped (one sentence, or no question last)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
