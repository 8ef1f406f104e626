"""Data: keypoint data sets, SynthPose, and the crop geometry that feeds the model."""
