"""Reports: results streamed to JSONL, then report.json / report.md / report.html, and the gate.

Data flows one way: the runner appends each result to ``results.jsonl`` as it finishes; the
report writers and the gate read only that file (or a report.json built from it).
"""
