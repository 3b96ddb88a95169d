"""Render a parity report (the dict from ``run_parity``): terminal table, JSON, Markdown, PNG.

Every file is written to a temp file in the destination directory, then renamed, so a failed
run never leaves a half-written report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

from hla_deploy._atomic import atomic_path, atomic_write_bytes

_COLUMNS = [("backend", 14), ("status", 7), ("max_abs", 9), ("rel_rms", 9), ("min_cos", 10),
            ("tok_agree", 9), ("first_div", 9), ("state_rel", 9)]

JSON_NAME = "parity.json"
MARKDOWN_NAME = "PARITY_REPORT.md"
PLOT_NAME = "parity_error_by_position.png"


def _num(v, fmt=".2e") -> str:
    return "-" if v is None else format(v, fmt)


def _row(entry: dict) -> List[str]:
    m = entry.get("metrics")
    status = entry["status"].upper()
    if m is None:
        return [entry["name"], status] + ["-"] * 6
    fd = m.get("first_divergence")
    return [entry["name"], status, _num(m["max_abs_err"]), _num(m["rel_rms_err"]),
            _num(m["min_cosine"], ".7f"), _num(m["token_agreement"], ".4f"),
            "none" if fd is None else str(fd), _num(m["state_rel_err"])]


def format_table(report: dict) -> str:
    """The terminal summary: a header, one row per backend, reasons and the verdict."""
    ref = report["reference"]
    lines = [f"hla-deploy parity  checkpoint={report['checkpoint']}  dtype={report['dtype']}  "
             f"decode_steps={report['decode_steps']}",
             f"reference: {ref['description']}",
             "prompts: " + ", ".join(f"{b['batch_size']}x{b['prompt_tokens']} tokens" for b in report["batches"]),
             "tolerances: " + ", ".join(f"{k}={v:g}" for k, v in report["tolerances"].items()),
             ""]
    header = "  ".join(name.ljust(w) for name, w in _COLUMNS)
    lines += [header, "-" * len(header)]
    for e in report["backends"]:
        lines.append("  ".join(c.ljust(w) for c, (_, w) in zip(_row(e), _COLUMNS)))
    lines.append("")
    for e in report["backends"]:
        if e["status"] in ("skipped", "error"):
            lines.append(f"{e['name']}: {e['status']}: {e['reason']}")
        elif e["status"] == "fail":
            lines.append(f"{e['name']}: OUT OF TOLERANCE: {'; '.join(e['violations'])}")
        if e.get("note"):
            lines.append(f"{e['name']}: note: {e['note']}")
        if e.get("artifact"):
            temp = e["artifact"].endswith(".plan") or not report["onnx"]["given"]
            lines.append(f"{e['name']}: artifact {e['artifact']}"
                         + (" (built for this run in a temp dir, removed afterwards)" if temp else ""))
    for w in report.get("warnings", []):
        lines.append(f"warning: {w}")
    s = report["summary"]
    verdict = "PASS" if s["ok"] else "FAIL"
    lines.append(f"{verdict}: passed {len(s['passed'])} ({', '.join(s['passed']) or '-'}), "
                 f"failed {len(s['failed'])} ({', '.join(s['failed']) or '-'}), "
                 f"errors {len(s['errors'])} ({', '.join(s['errors']) or '-'}), "
                 f"skipped {len(s['skipped'])} ({', '.join(s['skipped']) or '-'}; not counted as passed)")
    return "\n".join(lines)


def _atomic_write(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, data)


def write_json(report: dict, path) -> Path:
    """Write the report as JSON (schema: docs/PARITY.md)."""
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    return _atomic_write(Path(path), text.encode("utf-8"))


def format_markdown(report: dict, plot_name: Optional[str] = PLOT_NAME) -> str:
    ref = report["reference"]
    s = report["summary"]
    out = [f"# Parity report: {'PASS' if s['ok'] else 'FAIL'}", "",
           f"- checkpoint: `{report['checkpoint']}`",
           f"- dtype under test: {report['dtype']} (reference float32)",
           f"- reference: {ref['description']}",
           f"- prompts: " + ", ".join(f"{b['batch_size']} x {b['prompt_tokens']} tokens" for b in report["batches"])
           + f", then {report['decode_steps']} teacher-forced greedy decode steps",
           f"- created: {report['created']} by hla-deploy {report['hla_deploy_version']} "
           f"(report schema {report['schema_version']})", "",
           "| backend | status | max abs err | rel RMS err | min cosine | token agreement | first divergence | state rel err |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in report["backends"]:
        out.append("| " + " | ".join(_row(e)) + " |")
    out += ["", "Tolerances: " + ", ".join(f"`{k}` {v:g}" for k, v in report["tolerances"].items()), ""]
    for e in report["backends"]:
        if e["status"] in ("skipped", "error"):
            out.append(f"- **{e['name']}** {e['status']}: {e['reason']}")
        elif e["status"] == "fail":
            out.append(f"- **{e['name']}** out of tolerance: {'; '.join(e['violations'])}")
        else:
            out.append(f"- **{e['name']}** passed: {e.get('description') or ''}")
        if e.get("note"):
            out.append(f"  - note: {e['note']}")
    for w in report.get("warnings", []):
        out.append(f"- warning: {w}")
    if plot_name:
        out += ["", f"![max abs logit error by token position]({plot_name})",
                "", "Max |logits - reference| over batch rows and vocab at each token position "
                    "(prefill positions first, then decode steps)."]
    return "\n".join(out) + "\n"


def write_plot(report: dict, path) -> Optional[Path]:
    """PNG: max abs logit error against token position, one line per backend that ran."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    plotted = 0
    for e in report["backends"]:
        ys = e.get("per_position_max_abs_err") or []
        if not ys:
            continue
        xs = list(range(len(ys)))
        ys = [max(y, 1e-12) if y is not None else float("nan") for y in ys]
        ax.plot(xs, ys, marker=".", label=f"{e['name']} ({e['status']})")
        plotted += 1
    prefill = max((b["prompt_tokens"] for b in report["batches"]), default=0)
    if report["batches"] and len({b["prompt_tokens"] for b in report["batches"]}) == 1:
        ax.axvline(prefill - 0.5, color="gray", linestyle="--", linewidth=1)
        ax.text(prefill - 0.5, 1, " decode ->", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    tol = report.get("tolerances", {}).get("max_abs_err")
    if tol:
        ax.axhline(tol, color="red", linestyle=":", linewidth=1, label=f"max_abs_err tolerance ({tol:g})")
    ax.set_yscale("log")
    ax.set_xlabel("token position (prefill, then decode steps)")
    ax.set_ylabel("max |logits - reference|")
    ax.set_title(f"parity vs reference ({report['reference']['form']}, {report['dtype']})")
    if plotted:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no backend ran", transform=ax.transAxes, ha="center")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


def write_report_dir(report: dict, directory) -> dict:
    """Write JSON, Markdown and PNG into ``directory``; returns {kind: path}."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"plot": write_plot(report, d / PLOT_NAME)}
    paths["json"] = write_json(report, d / JSON_NAME)
    paths["markdown"] = _atomic_write(d / MARKDOWN_NAME, format_markdown(report).encode("utf-8"))
    return paths
