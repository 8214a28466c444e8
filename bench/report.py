"""The results table (Markdown, printed and pasted into bench/README.md) and the chart (`bench/results.png`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _ok(flag: bool | None) -> str:
    return "—" if flag is None else ("✅" if flag else "❌ missed")


def _x(value: float) -> str:
    return f"{value:.2f}×"


def table(r: dict[str, Any]) -> str:
    """One row per measure: the three contenders (and the reference), the ratio the bar is on, the bar."""
    rows: list[tuple[str, str, str, str, str, str, str]] = []
    t = r.get("tokens")
    if t:
        tk = t["tokens"]
        b = t["bars"]
        rows.append(
            (
                f"context tokens, one question about {t['videos']} videos ({t['rows']} product rows)",
                f"{tk['raw_upstream_json']:,}",
                f"{tk['naive_wrapper']:,}",
                f"{tk['keyapi_concise']:,} (detailed {tk['keyapi_detailed']:,})",
                f"CSV floor {tk['csv_floor']:,}",
                f"{t['concise_share_of_raw'] * 100:.1f}% of raw; {_x(t['concise_vs_csv_floor'])} CSV",
                "≤ 6% of raw, ≤ 1.5× CSV " + _ok(b["concise ≤ 6% of raw JSON"] and b["concise ≤ 1.5× CSV floor"]),
            )
        )
        rows.append(
            (
                "facts in keyapi-mcp's text (video, product, units, GMV)",
                "",
                "",
                f"{t['facts_found']}/{t['facts_expected']}, all {t['videos']} video ids",
                "",
                "",
                "every one present " + _ok(b["every video_id, product_id, units, GMV present"]),
            )
        )
    c = r.get("credits")
    if c:
        cr = c["credits"]
        rows.append(
            (
                f"credits, scripted {c['calls']}-call session",
                "",
                f"{cr['naive']} ({_x(c['naive_vs_minimum'])} min)",
                f"{cr['keyapi']}",
                f"minimum {cr['minimum']}",
                f"{_x(c['keyapi_vs_minimum'])} minimum",
                "= minimum on every call " + _ok(c["bars"]["keyapi-mcp charged = minimum on every call"]),
            )
        )
        st = c["session_tokens"]
        rows.append(("context tokens, same session", "", f"{st['naive']:,}", f"{st['keyapi']:,}", "", "", ""))
    g = r.get("golden")
    if g:
        gb, gc, gt = g["bars"], g["credits"], g["tokens"]
        rows.append(
            (
                f"golden questions: {g['questions']} over {g['videos']} videos, figures printed literally",
                "",
                "",
                f"{g['figures_printed']}/{g['figures_expected']} "
                f"({g['questions_fully_answered']}/{g['questions']} questions complete)",
                "",
                "",
                "every one " + _ok(gb["every golden figure printed literally"]),
            )
        )
        rows.append(
            (
                "golden questions: text tokens and credits",
                "",
                f"{gt['wrapper']:,} tokens; {gc['wrapper']} credits",
                f"{gt['keyapi_text']:,} tokens; {gc['keyapi']} credits",
                f"minimum {gc['minimum']} credits",
                f"{g['text_share_of_wrapper'] * 100:.1f}% of the wrapper's tokens",
                "≤ 12% "
                + _ok(gb["text ≤ 12% of the raw-envelope wrapper's tokens"])
                + "; credits ≤ wrapper, = minimum "
                + _ok(gb["credits ≤ the wrapper's on every question"] and gb["credits = the minimum over the set"]),
            )
        )
    for key in ("latency_50ms", "latency"):
        lat = r.get("stdio", {}).get(key)
        if not lat:
            continue
        up = lat["upstream_latency_ms"]
        d = lat["direct_httpx_get"]
        lb = lat.get("bars")
        rows.append(
            (
                f"call latency p50 / p95 ms over stdio, upstream answering in {up} ms",
                f"direct GET {d['p50_ms']:.1f} / {d['p95_ms']:.1f}",
                f"{lat['naive_wrapper']['p50_ms']:.1f} / {lat['naive_wrapper']['p95_ms']:.1f}",
                f"uncached {lat['keyapi_uncached']['p50_ms']:.1f} / {lat['keyapi_uncached']['p95_ms']:.1f}; "
                f"cached {lat['keyapi_cached']['p50_ms']:.1f} / {lat['keyapi_cached']['p95_ms']:.1f}",
                "SDK echo {p50_ms:.1f} / {p95_ms:.1f}".format(**lat["minimal_echo"]),
                f"uncached {_x(lat['uncached_p50_vs_direct'])}, cached {_x(lat['cached_p50_vs_direct'])} direct "
                f"(naive {_x(lat['naive_p50_vs_direct'])}, SDK echo {_x(lat['echo_p50_vs_direct'])})",
                (
                    f"uncached ≤ 1.10× {_ok(lb['uncached p50 ≤ 1.10× direct GET'])}, "
                    f"cached ≤ 0.10× {_ok(lb['cached p50 ≤ 0.10× direct GET'])}"
                )
                if lb
                else "information (no bar)",
            )
        )
        w = lat.get("wire")
        if w:
            rows.append(
                (
                    f"the same calls at the wire (bare JSON-RPC client), upstream {up} ms",
                    "",
                    "",
                    f"uncached {w['uncached']['p50_ms']:.1f} / {w['uncached']['p95_ms']:.1f}; "
                    f"cached {w['cached']['p50_ms']:.1f} / {w['cached']['p95_ms']:.1f}",
                    "echo {p50_ms:.1f} / {p95_ms:.1f}".format(**w["echo"]),
                    f"uncached {_x(w['uncached_p50_vs_direct'])}, cached {_x(w['cached_p50_vs_direct'])} direct "
                    f"(echo {_x(w['echo_p50_vs_direct'])})",
                    "information: the server without the SDK client's own cost",
                )
            )
    cs = r.get("stdio", {}).get("cold_start")
    if cs:
        m = cs["median_ms"]
        rows.append(
            (
                f"cold start spawn → initialized, median of {cs['runs']} (ms)",
                "",
                f"{m['naive']:.0f}",
                f"{m['keyapi']:.0f}",
                f"minimal {m['minimal']:.0f}",
                f"{_x(cs['keyapi_vs_minimal'])} minimal",
                "≤ 1.15× " + _ok(cs["bars"]["cold start ≤ 1.15× minimal server"]),
            )
        )
    mem = r.get("stdio", {}).get("memory")
    if mem:
        k, mn, nv = mem["keyapi"], mem["minimal"], mem["naive"]
        n = mem["calls"]
        end_ok, growth_ok = mem["bars"].values()
        rows.append(
            (
                f"RSS MB idle → after {n:,} calls",
                "",
                f"{nv['idle_mb']:.1f} → {nv['after_calls_mb']:.1f}",
                f"{k['idle_mb']:.1f} → {k['after_calls_mb']:.1f} (growth after warm-up {k['growth_mb']:.1f})",
                f"minimal {mn['idle_mb']:.1f} → {mn['after_calls_mb']:.1f}",
                f"{_x(mem['idle_vs_minimal'])} idle, {_x(mem['after_calls_vs_minimal'])} after",
                f"after ≤ 1.15× {_ok(end_ok)}; growth ≤ 5 MB {_ok(growth_ok)}",
            )
        )
    cc = r.get("concurrency")
    if cc:
        tp = cc["calls_per_s"]
        errors = f", {cc['tool_errors']} tool errors" if cc["tool_errors"] else ""
        rows.append(
            (
                f"throughput, {cc['concurrency']} concurrent uncached calls over HTTP, "
                f"upstream {cc['upstream_latency_ms']} ms (calls/s)",
                f"direct GET {tp['direct']:.0f}",
                "",
                f"{tp['keyapi']:.0f}{errors}",
                f"minimal server {tp['minimal_server']:.0f}",
                f"{cc['keyapi_vs_direct'] * 100:.0f}% of direct "
                f"(minimal server {cc['minimal_server_vs_direct'] * 100:.0f}%)",
                "information (no bar)",
            )
        )
    head = ("measure", "raw upstream", "naive wrapper", "keyapi-mcp", "reference", "ratio", "bar")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    fig.suptitle("keyapi-mcp benchmarks (offline, fake upstream on 127.0.0.1, same run)", fontsize=13)
    colors = {"raw": "#9e9e9e", "naive": "#e57373", "keyapi": "#2e7d32", "ref": "#64b5f6"}

    ax = axes[0][0]
    t = r.get("tokens")
    if t:
        tk = t["tokens"]
        labels = ["raw upstream\nJSON", "naive\nwrapper", "CSV floor", "keyapi-mcp\nconcise"]
        values = [tk["raw_upstream_json"], tk["naive_wrapper"], tk["csv_floor"], tk["keyapi_concise"]]
        bars = ax.bar(labels, values, color=[colors["raw"], colors["naive"], colors["ref"], colors["keyapi"]])
        ax.bar_label(bars, labels=[f"{v:,}" for v in values])
        ax.set_title(f"Context tokens: one question about {t['videos']} videos ({t['rows']} rows)")
        ax.set_ylabel("tokens (anthropic-tokenizer)")

    ax = axes[0][1]
    c = r.get("credits")
    if c:
        calls = list(range(1, c["calls"] + 1))
        for key, label, color, style, width in (
            ("naive", "naive wrapper", colors["naive"], "-o", 1.5),
            ("keyapi", "keyapi-mcp", colors["keyapi"], "-s", 3.0),
            ("minimum", "minimum possible", colors["ref"], "--", 1.5),
        ):
            total, series = 0, []
            for row in c["per_call"]:
                total += row[key]
                series.append(total)
            ax.plot(calls, series, style, label=label, color=color, markersize=4, linewidth=width)
        ax.set_title(f"Credits spent over a scripted {c['calls']}-call session")
        ax.set_xlabel("call")
        ax.set_ylabel("cumulative credits")
        ax.legend()

    ax = axes[1][0]
    lats = [(k, r.get("stdio", {}).get(k)) for k in ("latency_50ms", "latency")]
    lats = [(k, v) for k, v in lats if v]
    if lats:
        series = [
            ("direct httpx GET", "direct_httpx_get", colors["raw"]),
            ("SDK echo (minimal)", "minimal_echo", colors["ref"]),
            ("naive wrapper", "naive_wrapper", colors["naive"]),
            ("keyapi-mcp uncached", "keyapi_uncached", "#66bb6a"),
            ("keyapi-mcp cached", "keyapi_cached", colors["keyapi"]),
        ]
        width = 0.16
        for i, (label, key, color) in enumerate(series):
            xs = [j + (i - 2) * width for j in range(len(lats))]
            ax.bar(xs, [v[key]["p50_ms"] for _, v in lats], width, label=label, color=color)
        ax.set_xticks(range(len(lats)), [f"upstream {v['upstream_latency_ms']} ms" for _, v in lats])
        ax.set_yscale("log")  # 50 ms and 0 ms upstreams on one axis
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_ylabel("p50 ms per call (stdio, log scale)")
        ax.set_title("Call latency p50 over stdio")
        ax.legend(fontsize=8)

    ax = axes[1][1]
    # label, value, bar (None: information only, drawn blue), higher_is_better
    ratios: list[tuple[str, float, float | None, bool]] = []
    lat = r.get("stdio", {}).get("latency_50ms")
    if lat:
        ratios.append(("uncached call ×direct GET (50 ms)", lat["uncached_p50_vs_direct"], 1.10, False))
        ratios.append(("cached call ×direct GET (50 ms)", lat["cached_p50_vs_direct"], 0.10, False))
    lat0 = r.get("stdio", {}).get("latency")
    if lat0:
        ratios.append(("(uncached ×direct GET, 0 ms)", lat0["uncached_p50_vs_direct"], None, False))
        ratios.append(("(cached ×direct GET, 0 ms)", lat0["cached_p50_vs_direct"], None, False))
    cs = r.get("stdio", {}).get("cold_start")
    if cs:
        ratios.append(("cold start ×minimal", cs["keyapi_vs_minimal"], 1.15, False))
    mem = r.get("stdio", {}).get("memory")
    if mem:
        ratios.append((f"RSS after {mem['calls']:,} calls ×minimal", mem["after_calls_vs_minimal"], 1.15, False))
    cc = r.get("concurrency")
    if cc:
        ratios.append(("(HTTP throughput ×direct)", cc["keyapi_vs_direct"], None, True))
    if ratios:
        ys = list(range(len(ratios)))[::-1]
        for y, (_label, value, bar, higher) in zip(ys, ratios, strict=True):
            if bar is None:
                color = colors["ref"]
            else:
                good = value >= bar if higher else value <= bar
                color = colors["keyapi"] if good else "#ef6c00"
                ax.plot([bar, bar], [y - 0.4, y + 0.4], color="black", linewidth=2)
            ax.barh(y, value, color=color)
            ax.text(value, y, f" {value:.2f}×", va="center")
        ax.set_yticks(ys, [x[0] for x in ratios])
        ax.set_title("Ratios (tick = bar; orange = missed; blue = info)")
        ax.set_xlim(0, max(1.6, max(v for _, v, _, _ in ratios) * 1.2))

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def golden_table(g: dict[str, Any]) -> str:
    """Per question of the golden set: calls, credits, tokens against the raw-envelope wrapper, figures."""
    head = ("#", "question", "calls", "credits (min / wrapper)", "text tokens (wrapper)", "figures printed")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, q in enumerate(g["per_question"], start=1):
        calls = ", ".join(dict.fromkeys(q["calls"])) + (f" ×{len(q['calls'])}" if len(q["calls"]) > 1 else "")
        lines.append(
            f"| {i} | {q['question']} | {calls} | {q['credits']} ({q['minimum_credits']} / {q['wrapper_credits']}) | "
            f"{q['text_tokens']:,} ({q['wrapper_tokens']:,}) | {q['figures'] - len(q['missing'])}/{q['figures']} |"
        )
    return "\n".join(lines)
