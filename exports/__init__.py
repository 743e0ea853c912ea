"""The pretrained model climbgrade ships; installed as `climbgrade_runtime.exports`."""
