from pathlib import Path

import pytest

from locllm.training.config import TrainConfig, apply_override, dump_config, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _raw(**sections):
    raw = {
        "output_dir": "runs/x",
        "model": {"size": "tiny", "tokenizer": "char"},
        "data": {"datasets": [{"type": "coco", "annotation_file": "a.json", "image_root": "img"}]},
    }
    raw.update(sections)
    return raw


@pytest.mark.parametrize("path", sorted((CONFIGS / "paper").glob("*.yaml")) + sorted((CONFIGS / "synthpose").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    assert config.optim.batch_size % config.optim.micro_batch_size == 0


def test_paper_stage_values():
    stage1 = load_config(CONFIGS / "paper" / "stage1_cc3m.yaml")
    assert (stage1.optim.stage, stage1.optim.batch_size, stage1.optim.lr, stage1.optim.weight_decay) == (1, 128, 0.03, 0.0)
    assert stage1.optim.warmup_steps == 200 and stage1.optim.epochs == 1
    stage2 = load_config(CONFIGS / "paper" / "stage2_coco_12e.yaml")
    assert (stage2.optim.lr, stage2.optim.weight_decay, stage2.optim.batch_size, stage2.optim.epochs) == (5e-4, 0.05, 64, 12)
    assert isinstance(stage2.optim.lr, float)
    assert (stage2.model.lora_r, stage2.model.lora_alpha, stage2.model.lora_dropout) == (8, 16, 0.05)
    assert stage2.prompt.max_rounds == 5 and stage2.data.augmentation.max_rotation == 40.0
    holdout = load_config(CONFIGS / "paper" / "novel_keypoints_holdout.yaml")
    assert holdout.data.exclude_keypoints == ["right elbow", "left wrist", "left knee", "right ankle"]
    assert load_config(CONFIGS / "paper" / "h36m_mpii_3d.yaml").prompt.ndim == 3


def test_overrides_are_typed():
    config = load_config(base=_raw(), overrides=[
        "optim.lr=1e-3",  # YAML 1.1 reads this as a string; the field makes it a float
        "optim.max_steps=7",
        "model.lora_vision=false",
        "data.datasets.0.repeat=2.5",
        "data.datasets.0.scale_factor=1.25",  # a dataset keyword
        "data.exclude_keypoints=[left knee, nose]",
        "prompt.question_template={name}?",  # not YAML: kept as text
        "model.init_from=null",
    ])
    assert config.optim.lr == 1e-3 and isinstance(config.optim.lr, float)
    assert config.optim.max_steps == 7
    assert config.model.lora_vision is False
    assert config.data.datasets[0].repeat == 2.5
    assert config.data.datasets[0].args == {"annotation_file": "a.json", "image_root": "img", "scale_factor": 1.25}
    assert config.data.exclude_keypoints == ["left knee", "nose"]
    assert config.prompt.question_template == "{name}?"
    assert config.model.init_from is None


def test_override_creates_missing_sections():
    raw = {"output_dir": "x"}
    apply_override(raw, "logging.every_steps=5")
    assert raw["logging"] == {"every_steps": 5}


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown keys \\['lrr'\\]"),
    ("optim.lr=fast", "optim.lr must be a number"),
    ("optim.max_steps=1.5", "must be an integer"),
    ("model.lora_text=yes please", "must be true or false"),
    ("data.datasets.3.repeat=1", "must index the list"),
    ("optim", "expects key=value"),
    ("optim.stage=3", "stage must be 1 or 2"),
    ("optim.micro_batch_size=5", "multiple of optim.micro_batch_size"),
    ("prompt.coordinates=binary", "decimal"),
])
def test_bad_overrides_explain_themselves(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(base=_raw(), overrides=[override])


def test_consistency_checks():
    with pytest.raises(ValueError, match="stage 1 trains on captions"):
        load_config(base=_raw(), overrides=["optim.stage=1"])
    with pytest.raises(ValueError, match="both base paths"):
        load_config(base=_raw(), overrides=["model.size=null"])
    with pytest.raises(ValueError, match="model.tokenizer"):
        load_config(base=_raw(), overrides=["model.tokenizer=null"])
    # a fine-tune takes the architecture and the tokenizer of the checkpoint it starts from
    start = load_config(base=_raw(), overrides=["model.size=null", "model.tokenizer=null", "model.init_from=ckpt"])
    assert start.model.size is None and start.model.tokenizer is None
    with pytest.raises(ValueError, match="not both"):
        load_config(base=_raw(), overrides=["optim.warmup_steps=10", "optim.warmup_ratio=0.03"])
    with pytest.raises(ValueError, match="missing required keys \\['data'\\]"):
        load_config(base={"output_dir": "x", "model": {"size": "tiny", "tokenizer": "char"}})


def test_accumulation_and_warmup():
    optim = load_config(base=_raw(), overrides=["optim.batch_size=64", "optim.micro_batch_size=4"]).optim
    assert optim.accumulation_steps(1) == 16 and optim.accumulation_steps(4) == 4
    with pytest.raises(ValueError, match="3 processes"):
        optim.accumulation_steps(3)
    ratio = load_config(base=_raw(), overrides=["optim.warmup_ratio=0.03"]).optim
    assert ratio.warmup(1000) == 30


def test_dump_round_trip(tmp_path):
    config = load_config(CONFIGS / "paper" / "h36m_mpii_3d.yaml", ["optim.lr=2e-4"])
    dump_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config("no/such/config.yaml")
