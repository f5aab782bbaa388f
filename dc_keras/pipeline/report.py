"""The run's report: the paper's Table 2 rows from an ExportReport, and report.txt."""
from __future__ import annotations

from typing import Any, Dict, List


TABLE2_COLUMNS = ("layer", "weights", "weights_pct_p", "weight_bits_pq", "weight_bits_pqh", "index_bits_pq",
                  "index_bits_pqh", "rate_pq", "rate_pqh")


def table2_rows(export_report) -> List[Dict[str, Any]]:
    """The paper's Table 2 rows (per compressed layer, then "total") from an ExportReport.

    Columns: #weights, weights% kept after pruning (P), weight bits per nonzero with fixed-width codes (P+Q)
    and after Huffman (P+Q+H), relative-index bits per nonzero likewise, and the compression rate
    (compressed bits / float32 bits) P+Q and P+Q+H.
    """
    if export_report is None:
        return []
    data = export_report.to_dict()
    rows = [{"layer": l["name"], "weights": l["weights"], "weights_pct_p": l["weights_fraction"],
             "weight_bits_pq": l["bits"], "weight_bits_pqh": l["weight_bits_pqh"],
             "index_bits_pq": l["index_bits"], "index_bits_pqh": l["index_bits_pqh"],
             "rate_pq": l["rate_pq"], "rate_pqh": l["rate_pqh"]} for l in data["layers"]]
    if rows:
        t = data["total"]
        rows.append({"layer": "total", "weights": t["weights"], "weights_pct_p": t["weights_fraction"],
                     "weight_bits_pq": t["weight_bits_pq"], "weight_bits_pqh": t["weight_bits_pqh"],
                     "index_bits_pq": t["index_bits_pq"], "index_bits_pqh": t["index_bits_pqh"],
                     "rate_pq": t["rate_pq"], "rate_pqh": t["rate_pqh"]})
    return rows


def all_weights_summary(export_report) -> Dict[str, Any]:
    """The headline over every weight of the weighted layers, those left stock counted at float32:
    {"weights", "rate_pq", "rate_pqh"} (empty without a report)."""
    if export_report is None:
        return {}
    total = export_report.to_dict()["total"]
    if "rate_pq_all" not in total:
        return {}
    return {"weights": total["weights"] + total["stock_weights"], "rate_pq": total["rate_pq_all"],
            "rate_pqh": total["rate_pqh_all"]}


def format_report(report: Dict[str, Any]) -> str:
    """report.txt: the Table-2 layout of the paper, then file sizes and accuracies."""
    lines = ["Deep Compression report (Han, Mao, Dally 2016, Table 2 layout)", ""]
    header = (f"{'layer':<14}{'#weights':>10}{'weights%':>10}{'w bits':>8}{'w bits':>8}{'idx bits':>9}"
              f"{'idx bits':>9}{'rate':>9}{'rate':>9}")
    sub = f"{'':<14}{'':>10}{'(P)':>10}{'(P+Q)':>8}{'(P+Q+H)':>8}{'(P+Q)':>9}{'(P+Q+H)':>9}{'(P+Q)':>9}{'(P+Q+H)':>9}"
    lines += [header, sub]

    def fmt(value, spec):
        return format(value, spec) if isinstance(value, (int, float)) else "-"

    for row in report["table2"]:
        lines.append(f"{row['layer']:<14}{fmt(row['weights'], 'd'):>10}{fmt(row['weights_pct_p'], '.1%'):>10}"
                     f"{fmt(row['weight_bits_pq'], '.1f'):>8}{fmt(row['weight_bits_pqh'], '.1f'):>8}"
                     f"{fmt(row['index_bits_pq'], '.1f'):>9}{fmt(row['index_bits_pqh'], '.1f'):>9}"
                     f"{fmt(row['rate_pq'], '.2%'):>9}{fmt(row['rate_pqh'], '.2%'):>9}")
    total = report["table2"][-1] if report["table2"] else None
    stock_layers = report.get("stock_layers", [])
    everything = report.get("weights_all") or {}
    if everything.get("rate_pq") and everything.get("rate_pqh"):
        lines.append(f"{'':<14}all {everything['weights']} weights of weighted layers compressed "
                     f"{1 / everything['rate_pq']:.1f}x (P+Q), {1 / everything['rate_pqh']:.1f}x (P+Q+H)"
                     + (f"; the {len(stock_layers)} layers left stock count at float32" if stock_layers else ""))
    if total and total.get("rate_pq") and total.get("rate_pqh") and stock_layers:
        lines.append(f"{'':<14}compressed layers alone: {1 / total['rate_pq']:.1f}x (P+Q), "
                     f"{1 / total['rate_pqh']:.1f}x (P+Q+H)")
    for stock in stock_layers:
        weights = f", {stock['weights']} weights" if stock.get("weights") else ""
        lines.append(f"left stock: {stock.get('layer')} ({stock.get('op')}{weights}): {stock.get('reason')}")
    files = report["files"]
    lines.append("")
    int8 = (f", dense_int8.tflite {fmt(files['dense_int8.tflite'], 'd')} bytes"
            if files.get("dense_int8.tflite") else "")
    lines.append(f"dense.tflite {fmt(files['dense.tflite'], 'd')} bytes{int8}, compressed.tflite "
                 f"{fmt(files['compressed.tflite'], 'd')} bytes, ratio {fmt(files['ratio'], '.1f')}x")
    validation = ", ".join(f"{k} {v:.4f}" for k, v in (report.get("validation_accuracy") or {}).items()
                           if v is not None)
    if validation:
        lines.append(f"Keras validation accuracy (model selection): {validation}")
    if report.get("file_breakdown"):
        from dc_keras.export.report import format_breakdown

        lines.append("compressed.tflite " + format_breakdown(report["file_breakdown"]))
    if report.get("bit_allocation"):
        allocation = report["bit_allocation"]
        lines.append("bits chosen by allocation: " + ", ".join(f"{k} {v}" for k, v in allocation["bits"].items())
                     + f" (accuracy before fine-tuning {allocation['accuracy']:.4f}, pruned "
                     f"{allocation['baseline']:.4f}, on the selection split)")
    accuracy = ", ".join(f"{k} {v:.4f}" for k, v in report["accuracy"].items() if v is not None)
    lines.append(f"Keras test accuracy: {accuracy}")
    if report["tflite_accuracy"]:
        lines.append(".tflite test accuracy: "
                     + ", ".join(f"{k} {v:.4f}" for k, v in report["tflite_accuracy"].items()))
    lines += budget_lines(report.get("accuracy_budget"), report.get("auto_rounds") or [])
    if report.get("sensitivity"):
        proposal = report["sensitivity"]["proposal"]
        lines.append("sensitivity-analysis targets: " + ", ".join(f"{k} {v:.0%}" for k, v in proposal.items()))
    lines.append("seconds: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))
    return "\n".join(lines)




def budget_lines(check, auto_rounds) -> List[str]:
    """report.txt's accuracy-budget lines: validated dense vs compressed, the change and max_drop."""
    if not check or check.get("met") is None:
        return []
    dense_val = check.get("dense_validation")
    shown_val = f" (validation {dense_val:.4f})" if dense_val is not None else ""
    lines = [f"accuracy budget: validated dense {check['dense_test']:.4f}{shown_val} -> compressed "
             f"{check['compressed_test']:.4f} ({check['compressed_measured_on']}), change "
             f"{check['change_points']:+.2f} points; max_drop {check['max_drop_points']:g} points: "
             + ("met" if check["met"] else "NOT met")]
    for entry in auto_rounds:
        lines.append(f"auto round {entry['round']}: {entry['change']}; validation drop "
                     f"{entry['validation_drop_before']:.2f} -> {entry['validation_drop_after']:.2f} points")
    return lines
