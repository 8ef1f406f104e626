"""Keypoint sets as data: names, where each keypoint is on the body, flip partners, OKS sigmas, skeletons.

Every dataset's keypoints live here and nowhere else. A keypoint's ``name`` is the
words used in the prompt ("left knee"); ``description`` is one sentence, in our own
words, that tells the model where it is. ``flip`` names the left/right partner.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Keypoint:
    name: str
    description: str
    flip: str | None = None  # name of the mirror-image partner; None for midline keypoints


@dataclass(frozen=True)
class KeypointSet:
    name: str
    keypoints: tuple[Keypoint, ...]
    skeleton: tuple[tuple[int, int], ...] = ()  # 0-based index pairs
    sigmas: tuple[float, ...] | None = None  # COCO OKS sigmas, one per keypoint
    colors: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keypoints)

    def __iter__(self):
        return iter(self.keypoints)

    def __getitem__(self, i: int) -> Keypoint:
        return self.keypoints[i]

    @property
    def names(self) -> list[str]:
        return [k.name for k in self.keypoints]

    def index(self, name: str) -> int:
        normalized = normalize_name(name)
        for i, kp in enumerate(self.keypoints):
            if normalize_name(kp.name) == normalized:
                return i
        raise KeyError(f"keypoint {name!r} is not in the {self.name} set (known: {', '.join(self.names)})")

    def flip_indices(self) -> list[int]:
        """For each keypoint, the index of its mirror partner (itself when on the midline)."""
        return [self.index(k.flip) if k.flip else i for i, k in enumerate(self.keypoints)]

    def with_descriptions(self, descriptions: dict[str, str]) -> KeypointSet:
        """A copy whose descriptions are replaced where ``descriptions`` names the keypoint."""
        table = {normalize_name(k): v for k, v in descriptions.items()}
        kps = tuple(replace(k, description=table.get(normalize_name(k.name), k.description)) for k in self.keypoints)
        return replace(self, keypoints=kps)

    def subset(self, names: list[str]) -> KeypointSet:
        return replace(self, name=f"{self.name}-subset", keypoints=tuple(self[self.index(n)] for n in names),
                       skeleton=(), sigmas=None)


def normalize_name(name: str) -> str:
    """'Head_Top', 'head top' and 'head-top' are the same keypoint."""
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def _side(text: str, side: str) -> str:
    other = "right" if side == "left" else "left"
    return text.replace("{side}", side).replace("{other}", other)


def _pair(part: str, description: str) -> tuple[Keypoint, Keypoint]:
    """The left and right keypoint of a bilateral part, from one description with {side} slots."""
    return tuple(
        Keypoint(f"{side} {part}", _side(description, side), f"{'right' if side == 'left' else 'left'} {part}")
        for side in ("left", "right")
    )


# One sentence per keypoint type, written for this project. "Their left" is the person's own left,
# which appears on the right of the image when the person faces the camera.
NOSE = Keypoint("nose", "The nose is the tip of the person's nose, in the middle of the face below the eyes and above the mouth.")
EYE = _pair("eye", "The {side} eye is the centre of the person's own {side} eye, beside the bridge of the nose.")
EAR = _pair("ear", "The {side} ear is the opening of the person's own {side} ear, on the {side} side of the head behind the cheek.")
SHOULDER = _pair("shoulder", "The {side} shoulder is the joint where the person's {side} upper arm meets the trunk, at the outer end of the collarbone.")
ELBOW = _pair("elbow", "The {side} elbow is the hinge joint halfway along the {side} arm, joining the upper arm to the forearm between shoulder and wrist.")
WRIST = _pair("wrist", "The {side} wrist is the joint between the {side} forearm and the {side} hand, where the hand starts.")
HIP = _pair("hip", "The {side} hip is the joint where the {side} thigh meets the pelvis, at the lower {side} corner of the trunk.")
KNEE = _pair("knee", "The {side} knee is the joint halfway along the {side} leg, joining the thigh to the shin between hip and ankle.")
ANKLE = _pair("ankle", "The {side} ankle is the joint between the {side} shin and the {side} foot, just above the heel.")
TOE = _pair("toe", "The {side} toe is the tip of the {side} foot, the point furthest forward from the {side} ankle.")
NECK = Keypoint("neck", "The neck is the point where the head joins the trunk, midway between the two shoulders and below the chin.")
PELVIS = Keypoint("pelvis", "The pelvis is the centre of the hips, midway between the left and right hip joints at the bottom of the trunk.")
THORAX = Keypoint("thorax", "The thorax is the middle of the upper chest, just below the neck and between the shoulders.")
HEAD_TOP = Keypoint("head top", "The head top is the highest point of the skull, the crown of the head above the forehead.")
TORSO = Keypoint("torso", "The torso is the middle of the trunk along the spine, between the pelvis and the thorax.")

COCO_KEYPOINTS = KeypointSet(
    name="coco",
    keypoints=(NOSE, *EYE, *EAR, *SHOULDER, *ELBOW, *WRIST, *HIP, *KNEE, *ANKLE),
    skeleton=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
              (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
    sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
            0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
)

_L, _R = 0, 1
MPII_KEYPOINTS = KeypointSet(
    name="mpii",
    keypoints=(ANKLE[_R], KNEE[_R], HIP[_R], HIP[_L], KNEE[_L], ANKLE[_L], PELVIS, THORAX, NECK, HEAD_TOP,
               WRIST[_R], ELBOW[_R], SHOULDER[_R], SHOULDER[_L], ELBOW[_L], WRIST[_L]),
    skeleton=((0, 1), (1, 2), (2, 6), (3, 6), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (10, 11), (11, 12),
              (12, 7), (13, 7), (13, 14), (14, 15)),
)

H36M_KEYPOINTS = KeypointSet(
    name="h36m",
    keypoints=(PELVIS, HIP[_R], KNEE[_R], ANKLE[_R], HIP[_L], KNEE[_L], ANKLE[_L], TORSO, NECK, NOSE, HEAD_TOP,
               SHOULDER[_L], ELBOW[_L], WRIST[_L], SHOULDER[_R], ELBOW[_R], WRIST[_R]),
    skeleton=((0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 9), (9, 10), (8, 11),
              (11, 12), (12, 13), (8, 14), (14, 15), (15, 16)),
)

# Types no standard 2D training set labels: the novel keypoints of the paper's experiments.
EXTRA_KEYPOINTS = KeypointSet(
    name="extra",
    keypoints=(NECK, PELVIS, HEAD_TOP, THORAX, *TOE),
    skeleton=(),
)

KEYPOINT_SETS: dict[str, KeypointSet] = {s.name: s for s in (COCO_KEYPOINTS, MPII_KEYPOINTS, H36M_KEYPOINTS, EXTRA_KEYPOINTS)}

# The paper's novel-keypoint protocol holds these COCO types out of training.
PAPER_HELD_OUT = ("right elbow", "left wrist", "left knee", "right ankle")


def get_keypoint_set(name: str) -> KeypointSet:
    try:
        return KEYPOINT_SETS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown keypoint set {name!r}; known: {', '.join(KEYPOINT_SETS)}") from None


def all_known_keypoints() -> dict[str, Keypoint]:
    """Every keypoint type we have a description for, by normalized name."""
    table: dict[str, Keypoint] = {}
    for kp_set in KEYPOINT_SETS.values():
        for kp in kp_set:
            table.setdefault(normalize_name(kp.name), kp)
    return table
