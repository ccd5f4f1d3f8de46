"""PDF pages per second: rendering overlaps embedding in ``qvl ingest``.

A generated PDF (fpdf2: text and a bar chart on every page) is measured three ways, in one
process, with the tiny random checkpoint of the tests:

* **render alone**: the source's pass (each page's text layer) and the embedder's
  loading of each page reference (``report.pdf#page=N``: PDFium renders it, the release's
  smart resize sizes it), one page after the other, nothing embedded;
* **embed alone**: the same pages, already rendered and held in memory, embedded in the
  chunks ingest uses (``embed_documents`` of 32 items);
* **end to end**: ``connectors.ingest.ingest`` from the folder into Milvus Lite (read,
  render on the embedder's loading threads, embed, write), the baseline being the slower
  of the two stages above: if rendering overlaps embedding, end to end takes about as long
  as the slower stage, not the sum of both.

Usage:
    python benchmarks/bench_documents.py [--pages 200] [--dpi 72] [--repeats 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, cpu_flags_line, print_table, tmpdir  # noqa: E402


def write_pdf(path: str, pages: int) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Generated report")
    for i in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("helvetica", size=16)
        pdf.cell(0, 10, f"Section {i}: revenue and costs", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 6, (f"Page {i} of the report discusses quarter {i % 4 + 1} results, margins, "
                              "regional sales and the outlook for the next period. ") * 6)
        for j, h in enumerate([(i * 7 + 13 * k) % 60 + 10 for k in range(5)]):
            pdf.set_fill_color(40 + 40 * j, 90, 160)
            pdf.rect(30 + j * 28, 250 - h, 18, h, style="F")
    pdf.output(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--dpi", type=int, default=72, help="page render DPI (default 72: about 490 visual tokens a page)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    import connectors
    from connectors.ingest import ingest, open_source
    from connectors.ingest.documents import PdfOptions
    from embedder import Embedder
    from embedder.items import LoadOptions, load_image
    from embedder.testing import build_tiny_checkpoint

    work = tmpdir()
    folder = os.path.join(work, "docs")
    os.makedirs(folder)
    pdf_path = os.path.join(folder, "report.pdf")
    with Timer() as t:
        write_pdf(pdf_path, args.pages)
    print(f"wrote a {args.pages}-page PDF in {t.seconds:.1f} s ({os.path.getsize(pdf_path) / 1e3:.0f} kB)",
          file=sys.stderr)
    checkpoint = build_tiny_checkpoint(os.path.join(work, "tiny"), kind="embedding")
    emb = Embedder.from_pretrained(checkpoint, device="cpu")
    options = PdfOptions(dpi=args.dpi)
    source = open_source(folder, pdf=options)
    emb.embed_documents([{"image": f"{pdf_path}#page=1&dpi={args.dpi}", "text": "warm up"}])

    best: dict[str, float] = {}
    for r in range(args.repeats):
        # render alone: the source's text pass, then each page rendered and sized as the embedder loads it
        with Timer() as t:
            rows = [sr.row for sr in source.rows()]
            rendered = [load_image(row["image"], LoadOptions()) for row in rows]
        best["render"] = min(best.get("render", float("inf")), t.seconds)
        items = [{"image": img, "text": row.get("text", "")} for img, row in zip(rendered, rows)]
        # embed alone: pages already in memory, in ingest's chunks
        with Timer() as t:
            for s in range(0, len(items), 32):
                emb.embed_documents(items[s:s + 32], dim=128)
        best["embed"] = min(best.get("embed", float("inf")), t.seconds)
        del rendered, items
        # end to end into Milvus Lite
        target = f"milvus:{os.path.join(work, f'bench{r}.db')}"
        with connectors.connect(target, collection="pages", embedder=emb, dim=128) as store:
            store.create(exist_ok=True)
            with Timer() as t:
                summary = ingest(source.rows(), store, emb, batch_size=32)
            assert summary.written == args.pages, summary
        best["end to end"] = min(best.get("end to end", float("inf")), t.seconds)

    slower = max(best["render"], best["embed"])
    rows_out = []
    for name in ("render", "embed", "end to end"):
        note = ""
        if name == "end to end":
            note = (f"{best[name] / slower:.2f}x the slower stage; "
                    f"{best[name] / (best['render'] + best['embed']):.2f}x render + embed")
        rows_out.append([name, f"{best[name]:.1f}", f"{args.pages / best[name]:.1f}", note])
    print(f"\n{args.pages} pages (A4, text + chart) at {args.dpi} DPI, tiny checkpoint (float32, CPU), "
          f"best of {args.repeats}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(cpu_flags_line())
    print_table(["stage", "seconds", "pages/s", "end to end against the stages"], rows_out)
    emb.close()


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"(total {time.time() - t0:.0f} s)", file=sys.stderr)
