"""A stand-in for the OpenPose body network, so pose detection runs offline through the real
controlnet_aux code around it (peak finding, limb pairing, body assembly).

The real network is 52M parameters of fixed architecture and cannot be shrunk the way the
tiny SDXL parts are. ``DotReadingBodyNet`` instead reads pictures made by ``dot_picture``: a
black canvas with each of the 18 joints as a dot in its OpenPose colour. It answers with what
the real network answers for a clear figure: a Gaussian peak per joint in the heat maps and a
unit vector along each limb in the part-affinity fields, at stride 8.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from engine.rendering.poses import COLOURS, PoseTemplate, place

STRIDE = 8
# controlnet_aux's body.py: the limbs it pairs joints along (1-based) and their PAF channels (+19).
LIMB_SEQ = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13],
            [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [3, 17], [6, 18]]
MAP_IDX = [[31, 32], [39, 40], [33, 34], [35, 36], [41, 42], [43, 44], [19, 20], [21, 22], [23, 24], [25, 26],
           [27, 28], [29, 30], [47, 48], [49, 50], [53, 54], [51, 52], [55, 56], [37, 38], [45, 46]]
DOT_RADIUS = 10
COLOUR_TOLERANCE = 30


def dot_picture(template: PoseTemplate, size: int = 512, framing: str = "wide") -> Image.Image:
    """The template placed for a framing, each joint a dot in its OpenPose colour on black."""
    canvas = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(canvas)
    for point, colour in zip(place(template, framing=framing, width=size, height=size), COLOURS, strict=True):
        if point is not None:
            x, y = point
            draw.ellipse((x - DOT_RADIUS, y - DOT_RADIUS, x + DOT_RADIUS, y + DOT_RADIUS), fill=colour)
    return canvas


class DotReadingBodyNet(torch.nn.Module):
    """(PAFs, heat maps) as bodypose_model returns them, read off a ``dot_picture``."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # Body reads the device off it

    def forward(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Body feeds BGR / 256 - 0.5, NCHW
        bgr = ((data[0].permute(1, 2, 0).numpy() + 0.5) * 256).clip(0, 255)
        rgb = bgr[:, :, ::-1]
        height, width = rgb.shape[0] // STRIDE, rgb.shape[1] // STRIDE
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        heat = np.zeros((19, height, width), np.float32)
        centres: dict[int, tuple[float, float]] = {}
        for joint, colour in enumerate(COLOURS):
            mask = np.abs(rgb - np.array(colour, np.float32)).max(axis=2) <= COLOUR_TOLERANCE
            if mask.any():
                row, col = np.nonzero(mask)
                cx, cy = (col.mean() + 0.5) / STRIDE - 0.5, (row.mean() + 0.5) / STRIDE - 0.5
                centres[joint + 1] = (cx, cy)
                heat[joint] = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 2.0)
        heat[18] = 1.0 - heat[:18].max(axis=0)
        paf = np.zeros((38, height, width), np.float32)
        for (a, b), (ch_x, ch_y) in zip(LIMB_SEQ, MAP_IDX, strict=True):
            if a in centres and b in centres:
                vx, vy = centres[b][0] - centres[a][0], centres[b][1] - centres[a][1]
                norm = max(1e-6, float(np.hypot(vx, vy)))
                paf[ch_x - 19], paf[ch_y - 19] = vx / norm, vy / norm
        return torch.from_numpy(paf[None]), torch.from_numpy(heat[None])


def stub_detector():
    """controlnet_aux's OpenposeDetector around its real Body class, with the stand-in network."""
    from controlnet_aux.open_pose import OpenposeDetector
    from controlnet_aux.open_pose.body import Body

    body = Body.__new__(Body)  # Body.__init__ reads the 200 MB weights file; the network is all it sets
    body.model = DotReadingBodyNet()
    return OpenposeDetector(body)
