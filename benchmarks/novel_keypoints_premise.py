"""A test of the premise, labelled as such: does a pretrained LLM's reading of a keypoint's words tell a
localizer where a keypoint it was never trained on lies, more than a random network's reading of the same words?

    python benchmarks/novel_keypoints_premise.py --out runs/novel_premise --tower-steps 600 --steps 2000 --publish
    # on 2 quiet cores: ~5 min data, ~8 min tower, ~1 min prompt vectors, both arms side by side (one thread
    # each, ~4.5 steps/s), ~6 min scoring

Not the paper's experiment (``novel_keypoints_smollm2.py`` is; its CPU pilot missed its gate, see the README):
here the language model only reads each keypoint's words, once, and the localizer that answers is demo-sized.

Pre-registered design (fixed before the run, printed with it):
- **The reader**: SmolLM2-135M-Instruct at full depth (all 30 layers), frozen. Arm A: its pretrained weights.
  Arm B: the same architecture and tokenizer, randomly initialised (transformers' initialisation, seed 0).
  Each asked type's prompt is read once: by name only (``left knee``) and its description (the keypoint
  table's sentence, which names it), after the end-of-text token that opens every document the model
  read in pretraining (so no prompt word sits at the first position, whose state is the same for any
  token); the vector is the mean over the prompt's tokens of the last layer's output (after the final
  norm). Each dimension is standardised by the mean and spread of the 13 seen
  types' vectors (both prompts), so no unseen type shapes it.
- **The localizer** (the same for both arms, the same seed): the shared frozen part-naming tower of
  ``novel_keypoints_smollm2.py`` (its 8x8 patch features cached), each 2x2 group of patches merged into one
  image token (their features side by side, a linear projector, a learned position per token: 16 image
  tokens, the token merging small VLMs use to keep the LLM's sequence short), one query token (a linear map of the keypoint's vector) in place of the keypoint's
  words, and a demo-size Llama decoder (128-d, 4 layers, 4 heads) that answers the coordinates as text with
  2 decimals: the four digits of ``[0.xx,0.yy]`` (the brackets, point and comma are fixed by the answer
  grammar, so they carry no loss), greedy.
- **Training**: the seen 13 types only (the paper's four and the six extras never asked), one type per
  sample, its prompt by name or by description with equal chance (the same draws for both arms), AdamW
  lr 1e-3, weight decay 0.05, cosine after 100 warm-up steps, batch 64, ``--steps`` steps.
- **Scoring**: ``novel_keypoints_criteria.CRITERIA`` on 500 validation crops (another seed), the gate read on
  each prompt form (both trained) and passed only if passed on both; the learning curve every tenth of
  training on the first 100 crops; the controls (A with shuffled images, the mean-pose and partner-mean
  floors).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import novel_keypoints_smollm2 as experiment
import numpy as np
import torch
from novel_keypoints_criteria import (
    CRITERIA,
    CURVE_CROPS,
    competence_gate,
    difference_with_interval,
    pck_hits,
    pck_with_interval,
    primary_criterion,
)
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaModel

from locllm.data.synth.demo import CROP_SIZE
from locllm.keypoints import COCO_KEYPOINTS, EXTRA_KEYPOINTS
from locllm.models.gguf import resolve_base_path
from locllm.models.processing_locllm import LocLLMImageProcessor
from locllm.models.vision import patch_features
from locllm.training.vision_pretrain import PatchClassifier

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ("name_only", "with_description")
ARMS = {"A": "SmolLM2-135M-Instruct pretrained, 30 layers, frozen", "B": "same architecture random init, frozen"}
DIGITS = 4  # x tenths, x hundredths, y tenths, y hundredths
START = 10  # the token that opens the answer
MERGE = 2  # 2x2 patches per image token
WARMUP_STEPS, LR, WEIGHT_DECAY, BATCH = 100, 1e-3, 0.05, 64
DECODER = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
           "intermediate_size": 512, "vocab_size": 1, "max_position_embeddings": 128,
           "bos_token_id": None, "eos_token_id": None}  # it reads embeddings, never token ids
SEEN = experiment.GROUPS["seen"]


# ----------------------------------------------------------------------------------- shared inputs


def tower_features(out: Path, tower: Path, data: dict[str, dict]) -> dict[str, torch.Tensor]:
    """(M, 64, 128) frozen patch features of each crop set (cached in ``out``)."""
    cache = out / "features.safetensors"
    if not cache.is_file():
        model = PatchClassifier.from_pretrained(tower).tower.eval()
        pixels = LocLLMImageProcessor(CROP_SIZE).normalize
        with torch.no_grad():
            features = {name: torch.cat([patch_features(model, pixels(list(crops["crops"][i:i + 256])))
                                         for i in range(0, len(crops["crops"]), 256)])
                        for name, crops in data.items()}
        save_file(features, cache)
    return load_file(cache)


def prompt_texts() -> dict[str, list[str]]:
    keypoints = [*COCO_KEYPOINTS, *EXTRA_KEYPOINTS]
    return {"name_only": [k.name for k in keypoints], "with_description": [k.description for k in keypoints]}


def prompt_vectors(out: Path, arm: str) -> tuple[torch.Tensor, dict]:
    """(2, 23, 576) standardised vectors of every asked type's prompts (PROMPTS order) and what the reader is:
    its next-token loss on those prompts (a language model reads them far below the uniform log 49,152)."""
    cache, report_file = out / f"vectors_{arm}.safetensors", out / f"vectors_{arm}.json"
    if not cache.is_file():
        path = resolve_base_path("smollm2")
        tokenizer = AutoTokenizer.from_pretrained(path)
        if arm == "A":
            reader = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        else:
            torch.manual_seed(0)
            reader = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)
        reader.eval()
        document_start = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        vectors, loss, predicted = [], 0.0, 0
        with torch.no_grad():
            for texts in prompt_texts().values():
                rows = []
                for text in texts:
                    ids = torch.tensor([[document_start, *tokenizer(text, add_special_tokens=False)["input_ids"]]])
                    output = reader(input_ids=ids, labels=ids, output_hidden_states=True)
                    rows.append(output.hidden_states[-1][0, 1:].mean(0))  # the last layer, after the final norm
                    loss += output.loss.item() * (ids.shape[1] - 1)
                    predicted += ids.shape[1] - 1
                vectors.append(torch.stack(rows))
        vectors = torch.stack(vectors)  # (2, 23, 576)
        seen = vectors[:, SEEN].reshape(-1, vectors.shape[-1])
        standardised = (vectors - seen.mean(0)) / (seen.std(0) + 1e-6)
        save_file({"vectors": standardised.contiguous()}, cache)
        report_file.write_text(json.dumps({
            "layers": reader.config.num_hidden_layers,
            "next_token_loss_on_the_prompts": round(loss / predicted, 3),
            "uniform_loss": round(float(np.log(reader.config.vocab_size)), 3),
            "nearest_seen_type_by_cosine": nearest_seen(standardised)}, indent=2))
    return load_file(cache)["vectors"], json.loads(report_file.read_text())


def nearest_seen(vectors: torch.Tensor) -> dict[str, dict[str, str]]:
    """For each never-trained type and prompt form, the seen type whose vector is closest (cosine)."""
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    found = {}
    for form, rows in zip(PROMPTS, unit, strict=True):
        similarity = rows @ rows[SEEN].T  # (23, 13)
        for k in (*experiment.GROUPS["held_out"], *experiment.GROUPS["extras"]):
            best = int(similarity[k].argmax())
            found.setdefault(experiment.ASKED[k], {})[form] = (
                f"{experiment.ASKED[SEEN[best]]} ({similarity[k, best].item():.2f})")
    return found


# ----------------------------------------------------------------------------------------- model


class VectorLocalizer(nn.Module):
    """Patch features + one keypoint vector -> the four answer digits, a Llama decoder in between."""

    def __init__(self, feature_size: int, query_size: int, num_patches: int):
        super().__init__()
        width = DECODER["hidden_size"]
        self.image_projector = nn.Linear(MERGE * MERGE * feature_size, width)
        self.token_positions = nn.Parameter(torch.randn(num_patches // MERGE**2, width) * 0.02)
        self.query_projector = nn.Linear(query_size, width)
        self.digit_embeddings = nn.Embedding(11, width)  # 0-9 and START
        self.decoder = LlamaModel(LlamaConfig(**DECODER))
        self.digit_head = nn.Linear(width, 10)

    def forward(self, features: torch.Tensor, queries: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: ``digits`` (B, k < 4) the answer so far -> (B, k + 1, 10) logits of each next digit."""
        opened = torch.cat([torch.full_like(digits[:, :1], START), digits], dim=1)
        sequence = torch.cat([self.image_projector(merge_patches(features)) + self.token_positions,
                              self.query_projector(queries)[:, None], self.digit_embeddings(opened)], dim=1)
        hidden = self.decoder(inputs_embeds=sequence).last_hidden_state
        return self.digit_head(hidden[:, -opened.shape[1]:])

    @torch.no_grad()
    def answer(self, features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Greedy: (B, 2) answers in crop pixels."""
        digits = features.new_zeros((len(features), 0), dtype=torch.long)
        for _ in range(DIGITS):
            digits = torch.cat([digits, self(features, queries, digits)[:, -1].argmax(-1, keepdim=True)], dim=1)
        return torch.stack([digits[:, 0] * 10 + digits[:, 1], digits[:, 2] * 10 + digits[:, 3]], -1) / 100 * CROP_SIZE


def merge_patches(features: torch.Tensor) -> torch.Tensor:
    """(B, g*g, D) raster-ordered patch features -> (B, (g/2)^2, 4D): each 2x2 group side by side."""
    b, n, d = features.shape
    grid = int(round(n**0.5))
    blocks = features.reshape(b, grid // MERGE, MERGE, grid // MERGE, MERGE, d).permute(0, 1, 3, 2, 4, 5)
    return blocks.reshape(b, (grid // MERGE) ** 2, MERGE * MERGE * d)


def answer_digits(points: np.ndarray) -> np.ndarray:
    """(B, 2) crop pixels -> (B, 4) the digits of their 2-decimal text (1.00, a side's last pixel, as 0.99)."""
    hundredths = np.clip(np.rint(points / CROP_SIZE * 100), 0, 99).astype(np.int64)
    return np.stack([hundredths[:, 0] // 10, hundredths[:, 0] % 10, hundredths[:, 1] // 10, hundredths[:, 1] % 10], -1)


def answers_for(model: VectorLocalizer, features: torch.Tensor, vectors: torch.Tensor, types: list[int]) -> np.ndarray:
    """(M, len(types), 2) answers for every crop and type, asked with ``vectors`` (23, 576)."""
    rows = []
    for start in range(0, len(features), 64):
        chunk = features[start:start + 64]
        rows.append(torch.stack([model.answer(chunk, vectors[k].expand(len(chunk), -1)) for k in types], 1))
    return torch.cat(rows).numpy().astype(np.float64)


# -------------------------------------------------------------------------------------- training


def train_arm(out: Path, arm: str, args) -> None:
    """One arm's localizer, trained on the seen types; its weights, learning curve and speed into ``out``."""
    torch.set_num_threads(1)
    steps = args.steps
    train = experiment.crops_with_parts(out, args.train, experiment.TRAIN_SEED)
    val = experiment.crops_with_parts(out, args.val, experiment.VAL_SEED)
    features = load_file(out / "features.safetensors")
    vectors, _ = prompt_vectors(out, arm)
    torch.manual_seed(0)
    model = VectorLocalizer(features["train"].shape[-1], vectors.shape[-1], features["train"].shape[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / WARMUP_STEPS) * 0.5 * (
        1 + np.cos(np.pi * min(1.0, max(0, s - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)))))
    pairs = np.argwhere(train["labelled"][:, SEEN])  # (P, 2): crop, index into SEEN
    draws = np.random.default_rng(0)  # the same samples and prompt forms for both arms
    curve, started = {}, time.perf_counter()
    for step in range(1, steps + 1):
        crop, column = pairs[draws.integers(0, len(pairs), BATCH)].T
        types = np.asarray(SEEN)[column]
        form = draws.integers(0, len(PROMPTS), BATCH)
        target = torch.from_numpy(answer_digits(train["points"][crop, types]))
        logits = model(features["train"][crop], vectors[form, types], target[:, :DIGITS - 1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 10), target.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % max(1, steps // 10) == 0 or step == steps:
            model.eval()
            hits = pck_hits(answers_for(model, features["val"][:CURVE_CROPS], vectors[0], SEEN),
                            val["points"][:CURVE_CROPS][:, SEEN], val["labelled"][:CURVE_CROPS][:, SEEN], CROP_SIZE)
            curve[step] = pck_with_interval(hits, list(range(len(SEEN))))["pck@0.1"]
            model.train()
            print(f"arm {arm} step {step}/{steps}: loss {loss.item():.3f}, seen PCK@0.1 (name, 100 crops) "
                  f"{curve[step]:.3f}", flush=True)
    minutes = (time.perf_counter() - started) / 60
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"localizer_{arm}.safetensors")
    (out / f"train_{arm}.json").write_text(json.dumps({
        "steps": steps, "batch": BATCH, "samples": steps * BATCH, "minutes_with_curve": round(minutes, 1),
        "final_loss": round(loss.item(), 4), f"seen_pck@0.1_name_only_by_step_first_{CURVE_CROPS}_crops": curve},
        indent=2))


def train_side_by_side(out: Path, args) -> None:
    """Train the arms not trained yet, side by side, one thread each (this script's ``--train-arm``)."""
    arms = [arm for arm in ARMS if not (out / f"train_{arm}.json").is_file()]
    experiment.one_thread_each(
        {arm: [sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--train-arm", arm, "--steps", str(args.steps),
               "--train", str(args.train), "--val", str(args.val)] for arm in arms},
        {arm: out / f"train_{arm}.log" for arm in arms})


# --------------------------------------------------------------------------------------- scoring


def evaluate(out: Path, arm: str, features: torch.Tensor, val: dict) -> tuple[dict, dict]:
    vectors, _ = prompt_vectors(out, arm)
    model = VectorLocalizer(features.shape[-1], vectors.shape[-1], features.shape[1])
    model.load_state_dict(load_file(out / f"localizer_{arm}.safetensors"))
    model.eval()
    every = list(range(len(experiment.ASKED)))
    hits, figures = {}, {}
    for form, prompt in enumerate(PROMPTS):
        predicted = answers_for(model, features, vectors[form], every)
        hits[prompt] = pck_hits(predicted, val["points"], val["labelled"], CROP_SIZE)
        valid = np.ones(predicted.shape[:2], dtype=bool)
        figures[prompt] = experiment.scores(predicted, valid, val)
        figures[prompt]["where_answers_land"] = experiment.nearest_types(predicted, valid, val)
        shuffled = np.random.default_rng(0).permutation(len(features))  # each crop asked about another's picture
        hits[f"shuffled_images_{prompt}"] = pck_hits(answers_for(model, features[shuffled], vectors[form], every),
                                                     val["points"], val["labelled"], CROP_SIZE)
    return figures, hits


def verdicts(hits: dict, floor_hits: dict) -> dict:
    """The pre-registered criteria: the gate on each prompt form (both trained), the primary and the held-out
    four on each form, the shuffled-image control of A on each form."""
    floor = floor_hits["mean_pose"]
    gate = {arm: {prompt: competence_gate(hits[arm][prompt], floor, SEEN) for prompt in PROMPTS} for arm in ARMS}
    result = {"competence_gate": gate,
              "passed_gate": all(g["passed"] for forms in gate.values() for g in forms.values())}
    for prompt in PROMPTS:
        result[f"control_shuffled_images_A_minus_floor_{prompt}"] = {
            group: difference_with_interval(hits["A"][f"shuffled_images_{prompt}"], floor, columns)
            for group, columns in experiment.GROUPS.items()}
        result[f"extras_{prompt}"] = primary_criterion(hits["A"][prompt], hits["B"][prompt], floor,
                                                       experiment.GROUPS["extras"])
        result[f"held_out_{prompt}"] = primary_criterion(hits["A"][prompt], hits["B"][prompt], floor,
                                                         experiment.GROUPS["held_out"])
        result[f"held_out_{prompt}"]["A_minus_partner_mean"] = difference_with_interval(
            hits["A"][prompt], floor_hits["partner_mean"], experiment.GROUPS["held_out"])
    if not result["passed_gate"]:
        result["reading"] = "inconclusive: an arm missed the competence gate; the held-out figures are not read"
    else:
        met = [p for p in PROMPTS if result[f"extras_{p}"]["met"]]
        result["reading"] = (f"primary criterion met on the extras asked {' and '.join(met)}" if met else
                             "primary criterion not met: A does not localize the extras above both the floor and B")
    return result


def table(results: dict) -> str:
    names = experiment.EXTRAS
    lines = ["| arm | seen PCK@0.1 name / descr. [95 % interval, name] | held-out 4 name / descr. | "
             "extras 6 name / descr. | " + " / ".join(names) + " (descr.) | gate |", "|---|---|---|---|---|---|"]
    floor = results["floor"]
    lines.append(f"| image-blind mean pose (floor) | {floor['seen']['pck@0.1']:.3f} | {floor['held_out']['pck@0.1']:.3f} | "
                 f"{floor['extras']['pck@0.1']:.3f} | " + " / ".join(f"{floor[n]['pck@0.1']:.2f}" for n in names) + " | - |")
    for arm, name in ARMS.items():
        named, described = (results["arms"][arm]["scores"][p] for p in PROMPTS)
        gate = results["criteria"]["competence_gate"][arm]
        low, high = gate["name_only"]["seen"]["interval"]
        passed = all(g["passed"] for g in gate.values())
        lines.append(f"| {arm}: {name} | {named['seen']['pck@0.1']:.3f} / {described['seen']['pck@0.1']:.3f} "
                     f"[{low:.3f}, {high:.3f}] | {named['held_out']['pck@0.1']:.3f} / {described['held_out']['pck@0.1']:.3f} | "
                     f"{named['extras']['pck@0.1']:.3f} / {described['extras']['pck@0.1']:.3f} | "
                     + " / ".join(f"{described[n]['pck@0.1']:.2f}" for n in names)
                     + f" | {'passed' if passed else 'missed'} |")
    return "\n".join(lines) + f"\n\nReading: {results['criteria']['reading']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/novel_premise", type=Path)
    parser.add_argument("--train", type=int, default=10000, help="training crops")
    parser.add_argument("--val", type=int, default=500, help="validation crops")
    parser.add_argument("--tower-steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps of each arm (batch 64)")
    parser.add_argument("--train-arm", choices=tuple(ARMS), help=argparse.SUPPRESS)  # the side-by-side worker
    parser.add_argument("--publish", action="store_true", help="also write the JSON to benchmarks/results/")
    args = parser.parse_args()
    out = args.out.resolve()
    if args.train_arm:
        train_arm(out, args.train_arm, args)
        return
    print(CRITERIA, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    train = experiment.crops_with_parts(out, args.train, experiment.TRAIN_SEED)
    val = experiment.crops_with_parts(out, args.val, experiment.VAL_SEED)
    tower, tower_report = experiment.pretrain_tower(out, train, val, args.tower_steps, 64)
    features = tower_features(out, tower, {"train": train, "val": val})
    readers = {arm: prompt_vectors(out, arm)[1] for arm in ARMS}
    train_side_by_side(out, args)
    floor_hits = experiment.floors(train, val)
    results = {
        "label": "a test of the premise, not the paper's experiment: see the script's docstring",
        "design": __doc__.split("Pre-registered design (fixed before the run, printed with it):\n")[1].strip(),
        "criteria": None,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; each arm trained in its "
                   "own process (1 CPU thread)",
        "protocol": {"held_out": list(experiment.HELD_OUT), "extras_never_trained": list(experiment.EXTRAS),
                     "train_crops": args.train, "val_crops": args.val, "steps": args.steps, "batch": BATCH},
        "tower": tower_report,
        "floor": experiment.scores(np.broadcast_to(experiment.mean_pose(train), val["points"].shape),
                                   np.ones(val["labelled"].shape, dtype=bool), val),
        "arms": {},
    }
    hits = {}
    for arm, name in ARMS.items():
        figures, hits[arm] = evaluate(out, arm, features["val"], val)
        results["arms"][arm] = {"name": name, "reader": readers[arm], "scores": figures,
                                "train": json.loads((out / f"train_{arm}.json").read_text())}
    results["criteria"] = {"stated": CRITERIA, **verdicts(hits, floor_hits)}
    text = json.dumps(results, indent=2)
    (out / "results.json").write_text(text + "\n")
    if args.publish:
        (REPO / "benchmarks/results/novel_keypoints_premise.json").write_text(text + "\n")
    (out / "table.md").write_text(table(results) + "\n")
    print(CRITERIA)
    print(table(results))


if __name__ == "__main__":
    main()
