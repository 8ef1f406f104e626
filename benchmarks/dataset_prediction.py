"""Data-set prediction on this machine: ``locllm predict FOLDER --jsonl OUT`` with the shipped demo checkpoint,
in 1 process and in 2 (``torchrun``, Gloo, CPU); images/s, wall time and peak RSS of the largest process.

    locllm synth --out /tmp/synth1k --num-images 1000 --seed 7
    python benchmarks/dataset_prediction.py /tmp/synth1k/images benchmarks/results/dataset_prediction_1k.json
    python benchmarks/dataset_prediction.py /tmp/synth1k/images OUT.json /tmp/synth1k/annotations   # their boxes
    OMP_NUM_THREADS=1 python benchmarks/dataset_prediction.py ...    # one thread per process (a busy machine)

Without an annotation folder each image is one person (its whole picture); with one, the persons are the
annotated boxes of its COCO files, given as a detection-results file (score 1).

Each configuration runs under a fresh wrapper process whose ``RUSAGE_CHILDREN`` peak is the largest resident
set of any process it started (torchrun's ranks included). The load average is read before and after each run:
the machine may be shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs a command and prints the peak RSS (KiB) of the largest process it started, itself or a descendant.
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def measure(images: Path, processes: int, work: Path, boxes: Path | None) -> dict:
    jsonl, summary = work / f"p{processes}.jsonl", work / f"p{processes}.json"
    predict = ["predict", str(images), "--jsonl", str(jsonl), "--json", str(summary), "--no-progress",
               "--device", "cpu", *(["--boxes", str(boxes)] if boxes else [])]
    if processes == 1:
        command = [sys.executable, "-m", "locllm", *predict]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                   "--master-port", "29517", "-m", "locllm", *predict]
    # The cores shared out, unless OMP_NUM_THREADS says otherwise: on a machine busy with other work, two
    # OpenMP threads per process waited on each other (about 1 image/s, against 12 with one thread, measured
    # on the same 2 busy cores).
    threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, (os.cpu_count() or 1) // processes)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load_before = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    figures = json.loads(summary.read_text())
    return {"processes": processes, "threads_per_process": threads, "images": figures["images"],
            "persons": figures["persons"], "images_per_second": figures["images_per_second"],
            "answer_seconds": figures["seconds"], "wall_seconds": round(wall, 1),
            "peak_rss_mib": round(int(done.stdout.split()[-1]) / 1024, 1),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()]}


def annotated_boxes(annotations: Path, out: Path) -> Path:
    """Every annotated person box of the COCO files in ``annotations`` as detection results, by file name."""
    detections = []
    for path in sorted(annotations.glob("*.json")):
        data = json.loads(path.read_text())
        names = {image["id"]: image["file_name"] for image in data["images"]}
        detections += [{"file_name": names[a["image_id"]], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
                       for a in data["annotations"]]
    out.write_text(json.dumps(detections))
    return out


def main() -> int:
    images, out = Path(sys.argv[1]), Path(sys.argv[2])
    with tempfile.TemporaryDirectory() as work:
        boxes = annotated_boxes(Path(sys.argv[3]), Path(work, "boxes.json")) if len(sys.argv) > 3 else None
        runs = [measure(images, processes, Path(work), boxes) for processes in (1, 2)]
        same = Path(work, "p1.jsonl").read_bytes() == Path(work, "p2.jsonl").read_bytes()
    result = {"images": str(images), "boxes": "annotated" if boxes else "whole image", "cpu_count": os.cpu_count(),
              "identical_outputs": same, "runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
