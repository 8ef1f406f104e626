"""SynthPose: a synthetic keypoint benchmark that needs no download.

Rendered human figures (articulated 3D bodies, left limbs blue, right limbs red/orange) on noisy,
cluttered backgrounds, with exact keypoints for the COCO, MPII, Human3.6M and extra keypoint sets,
written in each data set's own annotation layout. In memory::

    image, persons = render_scene(np.random.default_rng(0), size=64, num_persons=1, difficulty="easy")

On disk: :func:`generate_synthpose`, or ``locllm synth --out DIR --num-images N --seed S``.
"""

from ..camera import PinholeCamera
from .figure import JOINT_NAMES, PARTS, Figure, joint_indices, sample_figure
from .generate import generate_synthpose
from .render import DIFFICULTIES, MAX_PERSONS, Difficulty, render_scene
from .writers import WRITERS, coco_self_check

__all__ = [
    "DIFFICULTIES", "JOINT_NAMES", "MAX_PERSONS", "PARTS", "WRITERS", "Difficulty", "Figure", "PinholeCamera",
    "coco_self_check", "generate_synthpose", "joint_indices", "render_scene", "sample_figure",
]
