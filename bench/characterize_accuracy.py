"""Characterize accuracy: onset, direction and top mover on synthetic scenarios with known truth.
How to run and what was measured: docs/characterize.md ("Measured accuracy").

    python bench/characterize_accuracy.py [--seeds 1,2,3] [--cases 250] [--live]

What it does:
1. Builds `--cases` scenarios per seed with tests/characterize_scenarios.py (the generator, the truth and
   the scorer the tests use; the kinds in turn: step_up, step_down, spike_then_step, ramp, flat).
2. Answers each case twice: with the reference algorithm of posthog-metrics.md (implemented there,
   from the spec) and with otelite's characterize code (`otelite.api.posthog.metrics.diagnosis`, the
   functions the endpoint calls once the bucket series are loaded).
3. With `--live`, also sends every case to a fresh `otelite serve` over OTLP/HTTP protobuf and asks
   POST metrics/characterize (candidateKeys ["shard"]), scores those answers too, and counts the cases
   where the live answer differs from the in-process one. `--live-only` skips the in-process answers,
   so the script can measure the server of another checkout (run it with that checkout's Python).
4. Prints, by kind and in total: onset within one bucket, direction, top mover (scored on the kinds
   that have a mover), for the reference and for otelite; and how the reported `onset_confidence`
   compares with the onset hit rate.

Not a test: pytest collects only tests/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from characterize_scenarios import (ANOMALY_BUCKETS, BASELINE_BUCKETS, KEY, KINDS, Answer, generate,  # noqa: E402
                                    gauge_points, live_answer, onset_hit, otelite_answer, reference_answer,
                                    score)
from metrics_otlp import MIN, gauge, iso  # noqa: E402

from bench.query_metrics import Server  # noqa: E402


def _pct(hits: int, total: int) -> str:
    return f"{100 * hits / total:5.1f}% ({hits}/{total})" if total else "n/a"


def print_table(title: str, cases, answers_by_algo: dict[str, list[Answer]]) -> None:
    print(f"\n{title}")
    print(f"{'kind':16} {'algorithm':10} {'onset ±1 bucket':>20} {'direction':>20} {'top mover':>20}")
    for kind in list(KINDS) + ["all"]:
        for algo, answers in answers_by_algo.items():
            t = score(cases, answers)[kind]
            print(f"{kind:16} {algo:10} {_pct(t.onset, t.cases):>20} {_pct(t.direction, t.cases):>20} "
                  f"{_pct(t.mover, t.with_mover):>20}")


def calibration(cases, answers: list[Answer]) -> None:
    """Reported onset_confidence against the onset hit rate, in bands."""
    bands = [(0.0, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.01)]
    print("\nonset_confidence against hits (cases with a modelled onset)")
    for lo, hi in bands:
        sel = [(c, a) for c, a in zip(cases, answers) if a.confidence is not None and lo <= a.confidence < hi]
        if sel:
            hits = sum(onset_hit(c, a) for c, a in sel)
            mean = np.mean([a.confidence for _, a in sel])
            print(f"  [{lo:.2f}, {min(hi, 1):.2f}): {len(sel):4} cases, mean confidence {mean:.3f}, "
                  f"onset within one bucket {hits / len(sel):.3f}")


def run_live(cases, runs_dir: Path) -> list[Answer]:
    server = Server(runs_dir)
    server.start()
    try:
        start = (time.time_ns() // (60 * MIN) - 6) * 60 * MIN  # a whole hour 6 hours ago
        anomaly_from = start + BASELINE_BUCKETS * MIN
        anomaly_to = anomaly_from + ANOMALY_BUCKETS * MIN
        headers = {"Authorization": f"Bearer {server.admin_key()}"}
        answers = []
        with httpx.Client(timeout=30) as client:
            for sc in cases:
                req = gauge(sc.name, gauge_points(sc, start, MIN))
                r = client.post(server.url + "/v1/metrics", content=req.SerializeToString(),
                                headers={"Content-Type": "application/x-protobuf"})
                r.raise_for_status()
                r = client.post(server.url + "/api/projects/1/metrics/characterize", headers=headers, json={
                    "query": {"metricName": sc.name, "anomalyFrom": iso(anomaly_from), "anomalyTo": iso(anomaly_to),
                              "candidateKeys": [KEY]}})
                r.raise_for_status()
                answers.append(live_answer(r.json(), anomaly_from, MIN))
        return answers
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated generator seeds")
    ap.add_argument("--cases", type=int, default=250, help="cases per seed")
    ap.add_argument("--live", action="store_true", help="also run every case through a live otelite")
    ap.add_argument("--live-only", action="store_true",
                    help="answer only through a live otelite (to measure the server of another checkout)")
    args = ap.parse_args(argv)
    args.live |= args.live_only
    seeds = [int(s) for s in args.seeds.split(",")]
    all_cases, all_ref, all_ours, all_live = [], [], [], []
    for seed in seeds:
        cases = generate(seed, args.cases)
        ref = [reference_answer(c) for c in cases]
        answers = {"reference": ref}
        title = f"seed {seed}: {len(cases)} cases"
        if not args.live_only:
            t0 = time.perf_counter()
            ours = answers["otelite"] = [otelite_answer(c) for c in cases]
            title += f" ({(time.perf_counter() - t0) / len(cases) * 1000:.1f} ms a case in process)"
            all_ours += ours
        if args.live:
            with tempfile.TemporaryDirectory(prefix="otelite-chz-") as tmp:
                live = answers["live"] = run_live(cases, Path(tmp))
            all_live += live
            if not args.live_only:
                differ = sum(a.scored() != b.scored() for a, b in zip(live, ours))
                print(f"seed {seed}: live answers that differ from the in-process ones: {differ}/{len(cases)}")
        print_table(title, cases, answers)
        all_cases += cases
        all_ref += ref
    if len(seeds) > 1:
        answers = {"reference": all_ref}
        if all_ours:
            answers["otelite"] = all_ours
        if args.live:
            answers["live"] = all_live
        print_table(f"seeds {args.seeds}: {len(all_cases)} cases", all_cases, answers)
    calibration(all_cases, all_ours or all_live)
    return 0


if __name__ == "__main__":
    sys.exit(main())
