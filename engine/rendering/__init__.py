"""Rendering: shots to frames (preview sketches or SDXL), prompts, poses and the storyboard sheet."""
