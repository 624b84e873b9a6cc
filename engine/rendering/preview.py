"""The preview renderer: sketch panels with no GPU and no model.

``PreviewRenderer`` needs no GPU and no model. It paints an honest sketch panel from the
shot's structured fields (setting, time of day, framing, pose) so a board can be laid out,
posted and reviewed on any machine. Every panel carries a "PREVIEW" ribbon and the note
"sketch — no AI model": it must never pass for generated art.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from engine.rendering.base import CancelCheck, FrameRequest, StepCallback
from engine.rendering.fonts import load_font, wrap_text
from engine.rendering.prompts import Prompt, fit_prompt
from engine.shots import Shot, hero_in

RGB = tuple[int, int, int]
Point = tuple[float, float]

FIGURE_COLOUR: RGB = (40, 36, 52)
PREVIEW_MARK_COLOUR: RGB = (196, 38, 46)
PREVIEW_NOTE = "sketch — no AI model"


class PreviewRenderer:
    """Pillow-only sketch panels: palette from setting and time, a kalpak-hatted silhouette
    sized by framing, the shot number, the English description and a PREVIEW mark."""

    name = "preview"
    batch_size = 1  # sketches gain nothing from batching; one frame at a time keeps progress per frame
    modes = ("simple", "ref-guided")

    def __init__(self, delay_s: float = 0.0) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must be non-negative, got {delay_s}")
        self.delay_s = delay_s

    def fit_prompt(self, prompt: Prompt) -> Prompt:
        """No tokenizer here: the conservative estimate keeps report.json's prompts SDXL-sized."""
        return fit_prompt(prompt)

    def render(
        self,
        requests: Sequence[FrameRequest],
        *,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[Image.Image]:
        return [self.draw(request) for request in requests]

    def draw(self, request: FrameRequest) -> Image.Image:
        """One sketch panel."""
        # 1. set up (FrameRequest checked its sizes when it was built)
        shot, width, height = request.shot, request.width, request.height
        rng = random.Random(request.seed)
        image = Image.new("RGB", (width, height))
        draw = ImageDraw.Draw(image)
        horizon = _horizon_y(shot, height)
        hero_x = _hero_x(shot, width)
        # 2. sky, light and ground
        _paint_sky(image, shot.time_of_day, horizon)
        _paint_sky_objects(draw, shot.time_of_day, width, horizon, rng)
        _paint_ground(draw, shot, width, height, horizon)
        # 3. setting props, placed away from the hero
        prop_x = _prop_x(shot, width, hero_x)
        _SETTING_PAINTERS[shot.setting](_Scene(draw, width, height, horizon, shot.time_of_day, prop_x, rng))
        # 4. figures
        _paint_figures(draw, shot, width, height, horizon, hero_x)
        # 5. overlays: number, description, honesty marks
        _paint_number_badge(draw, shot.index, height)
        if request.picture is not None:
            _paint_picture_inset(image, request.picture)
        _paint_description_band(image, shot.description, _reference_note(request))
        _paint_preview_ribbon(image)
        # 6. imitate GPU time when asked (tests, demos)
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        return image


# ---------------------------------------------------------------------------------------
# Palette
# ---------------------------------------------------------------------------------------

_SKY: dict[str, tuple[RGB, RGB]] = {  # (top, at the horizon)
    "dawn": ((112, 126, 180), (246, 192, 178)),
    "day": ((86, 156, 224), (204, 230, 246)),
    "sunset": ((70, 60, 126), (250, 158, 86)),
    "night": ((8, 12, 34), (34, 46, 90)),
}
_LIGHT: dict[str, tuple[float, RGB, float]] = {  # (brightness, tint, tint amount)
    "dawn": (0.9, (250, 180, 190), 0.15),
    "day": (1.0, (255, 255, 255), 0.0),
    "sunset": (0.85, (250, 140, 60), 0.2),
    "night": (0.35, (40, 60, 120), 0.25),
}
_GROUND: dict[str, RGB] = {
    "steppe": (198, 178, 104),
    "bazaar": (208, 182, 140),
    "yurt": (150, 178, 96),
    "village": (164, 170, 110),
    "mountains": (128, 150, 100),
    "river": (150, 180, 100),
    "camp": (172, 150, 100),
    "road": (176, 170, 112),
    "winter steppe": (236, 240, 246),
}


def _shade(colour: RGB, time_of_day: str) -> RGB:
    """Apply the time of day's light to a daylight colour."""
    brightness, tint, amount = _LIGHT[time_of_day]
    r, g, b = (round(c * brightness * (1 - amount) + t * amount) for c, t in zip(colour, tint))
    return r, g, b


# ---------------------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------------------

_HORIZON_FRACTION = {"low-angle": 0.72, "high-angle": 0.42}
_HERO_POSITIONS = {"close-up": (0.42, 0.58, 0.5)}
_THIRDS = (1 / 3, 2 / 3, 1 / 2)


def _horizon_y(shot: Shot, height: int) -> int:
    """Low angles show more sky, high angles more ground."""
    return round(height * _HORIZON_FRACTION.get(shot.camera_angle, 0.58))


def _hero_x(shot: Shot, width: int) -> int:
    """Rule-of-thirds placement that alternates from panel to panel."""
    positions = _HERO_POSITIONS.get(shot.framing, _THIRDS)
    return round(width * positions[(shot.index - 1) % len(positions)])


def _hero_facing(shot: Shot, width: int, hero_x: int) -> int:
    """Face into the frame; a centred hero alternates. +1 faces right, -1 left."""
    if abs(hero_x - width / 2) < 1:
        return 1 if shot.index % 2 else -1
    return 1 if hero_x < width / 2 else -1


def _prop_x(shot: Shot, width: int, hero_x: int) -> int:
    """The setting's main object goes on the other side of the frame, or behind a centred hero."""
    if abs(hero_x - width / 2) < 1:
        return round(hero_x - _hero_facing(shot, width, hero_x) * width * 0.3)
    return width - hero_x


# ---------------------------------------------------------------------------------------
# Sky and ground
# ---------------------------------------------------------------------------------------


def _paint_sky(image: Image.Image, time_of_day: str, horizon: int) -> None:
    top, bottom = _SKY[time_of_day]
    size = (image.width, max(1, horizon))
    mask = Image.linear_gradient("L").resize(size)
    sky = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)
    image.paste(sky, (0, 0))


def _paint_sky_objects(
    draw: ImageDraw.ImageDraw, time_of_day: str, width: int, horizon: int, rng: random.Random
) -> None:
    """Sun or moon in a fixed place; clouds or stars where the seed puts them."""
    r = max(4, round(width * 0.05))
    if time_of_day == "night":
        cx, cy = width * 0.6, horizon * 0.25
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(236, 236, 214))
        for _ in range(40):
            x, y = rng.uniform(0, width), rng.uniform(0, horizon * 0.9)
            draw.point((x, y), fill=(220, 224, 240))
        return
    sun_height = {"dawn": 0.8, "day": 0.22, "sunset": 0.85}[time_of_day]
    sun_colour = {"dawn": (252, 214, 170), "day": (255, 244, 196), "sunset": (252, 110, 50)}[time_of_day]
    cx, cy = width * 0.6, horizon * sun_height
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=sun_colour)
    cloud = _shade((250, 250, 252), time_of_day)
    for _ in range(rng.randint(2, 4)):
        _paint_cloud(draw, rng.uniform(0.05, 0.9) * width, rng.uniform(0.1, 0.5) * horizon, width * 0.06, cloud)


def _paint_cloud(draw: ImageDraw.ImageDraw, x: float, y: float, size: float, colour: RGB) -> None:
    for dx, dy, k in ((0, 0, 1.0), (size * 0.9, size * 0.2, 0.8), (-size * 0.9, size * 0.25, 0.7)):
        rx, ry = size * k, size * k * 0.6
        draw.ellipse((x + dx - rx, y + dy - ry, x + dx + rx, y + dy + ry), fill=colour)


def _paint_ground(draw: ImageDraw.ImageDraw, shot: Shot, width: int, height: int, horizon: int) -> None:
    ground = _shade(_GROUND[shot.setting], shot.time_of_day)
    draw.rectangle((0, horizon, width, height), fill=ground)
    r, g, b = (round(c * 0.7) for c in ground)
    draw.line((0, horizon, width, horizon), fill=(r, g, b), width=max(1, height // 200))


# ---------------------------------------------------------------------------------------
# Settings: one small painter each
# ---------------------------------------------------------------------------------------


@dataclass
class _Scene:
    draw: ImageDraw.ImageDraw
    width: int
    height: int
    horizon: int
    time_of_day: str
    prop_x: int  # where the setting's main object goes (opposite the hero)
    rng: random.Random

    def colour(self, daylight: RGB) -> RGB:
        return _shade(daylight, self.time_of_day)


def _paint_steppe(scene: _Scene) -> None:
    tuft = scene.colour((150, 132, 70))
    size = scene.height * 0.02
    for _ in range(18):
        x = scene.rng.uniform(0, scene.width)
        y = scene.rng.uniform(scene.horizon + size, scene.height)
        scene.draw.line((x, y, x - size * 0.4, y - size), fill=tuft, width=max(1, scene.height // 300))
        scene.draw.line((x, y, x + size * 0.4, y - size), fill=tuft, width=max(1, scene.height // 300))


def _paint_winter_steppe(scene: _Scene) -> None:
    flake = (255, 255, 255) if scene.time_of_day != "night" else (200, 206, 226)
    for _ in range(60):
        x, y = scene.rng.uniform(0, scene.width), scene.rng.uniform(0, scene.height)
        r = max(1, scene.height // 250)
        scene.draw.ellipse((x - r, y - r, x + r, y + r), fill=flake)


def _paint_mountains(scene: _Scene) -> None:
    rock, snow = scene.colour((110, 112, 132)), scene.colour((240, 242, 248))
    base = scene.horizon
    for left, peak_x, right, rise in ((-0.1, 0.15, 0.45, 0.55), (0.25, 0.5, 0.8, 0.7), (0.6, 0.85, 1.15, 0.5)):
        peak_h = base * (rise + scene.rng.uniform(-0.04, 0.04))
        peak = (scene.width * peak_x, base - peak_h)
        scene.draw.polygon([(scene.width * left, base), peak, (scene.width * right, base)], fill=rock)
        cap = 0.25
        cap_left = (peak[0] + (scene.width * left - peak[0]) * cap, peak[1] + peak_h * cap)
        cap_right = (peak[0] + (scene.width * right - peak[0]) * cap, peak[1] + peak_h * cap)
        scene.draw.polygon([cap_left, peak, cap_right], fill=snow)


def _paint_yurt(scene: _Scene) -> None:
    w = scene.width * 0.32
    x0, ground = scene.prop_x - w / 2, scene.horizon + (scene.height - scene.horizon) * 0.2
    wall_top = ground - w * 0.28
    felt, trim, door = scene.colour((236, 226, 204)), scene.colour((150, 60, 50)), scene.colour((176, 90, 40))
    scene.draw.rectangle((x0, wall_top, x0 + w, ground), fill=felt)
    scene.draw.chord((x0, wall_top - w * 0.35, x0 + w, wall_top + w * 0.35), 180, 360, fill=felt)
    scene.draw.line((x0, wall_top, x0 + w, wall_top), fill=trim, width=max(2, round(w * 0.03)))
    scene.draw.rectangle((scene.prop_x - w * 0.09, ground - w * 0.22, scene.prop_x + w * 0.09, ground), fill=door)


def _paint_bazaar(scene: _Scene) -> None:
    stall_w = scene.width * 0.22
    stripes = ((200, 60, 50), (240, 230, 210), (60, 110, 170), (240, 230, 210))
    wood, goods = scene.colour((150, 110, 70)), scene.colour((230, 150, 40))
    for k, centre in enumerate((scene.prop_x - stall_w * 0.6, scene.prop_x + stall_w * 0.6)):
        x0, peak = centre - stall_w / 2, scene.horizon - stall_w * 0.45
        eave, base = peak + stall_w * 0.2, scene.horizon + stall_w * 0.15
        scene.draw.rectangle((x0, eave, x0 + stall_w, base), fill=wood)
        for s in range(4):  # striped awning
            sx = x0 + s * stall_w / 4
            awning = [(sx, eave), (sx + stall_w / 4, eave), (sx + stall_w / 8, peak)]
            scene.draw.polygon(awning, fill=scene.colour(stripes[(s + k) % len(stripes)]))
        r, gy = stall_w * 0.07, base - stall_w * 0.3
        for g in range(3):  # goods on the counter
            gx = x0 + stall_w * (0.2 + 0.3 * g)
            scene.draw.ellipse((gx - r, gy - r, gx + r, gy + r), fill=goods)


def _paint_village(scene: _Scene) -> None:
    wall, roof = scene.colour((214, 190, 150)), scene.colour((150, 80, 60))
    trunk, leaves = scene.colour((100, 70, 40)), scene.colour((80, 130, 60))
    house_w = scene.width * 0.14
    base = scene.horizon + house_w * 0.1
    eave = base - house_w * 0.6
    for offset in (-0.9, 0.4):
        x0 = scene.prop_x + offset * house_w
        scene.draw.rectangle((x0, eave, x0 + house_w, base), fill=wall)
        gable = [(x0 - house_w * 0.1, eave), (x0 + house_w / 2, base - house_w), (x0 + house_w * 1.1, eave)]
        scene.draw.polygon(gable, fill=roof)
    tree_x, crown_r = scene.prop_x + house_w * 1.9, house_w * 0.3
    scene.draw.rectangle((tree_x - 3, scene.horizon - house_w * 0.4, tree_x + 3, base), fill=trunk)
    crown = (tree_x - crown_r, scene.horizon - house_w, tree_x + crown_r, scene.horizon - house_w * 0.3)
    scene.draw.ellipse(crown, fill=leaves)


def _paint_river(scene: _Scene) -> None:
    top = scene.horizon + (scene.height - scene.horizon) * 0.15
    band = (scene.height - scene.horizon) * 0.22
    water, ripple = scene.colour((70, 130, 190)), scene.colour((170, 210, 236))
    scene.draw.rectangle((0, top, scene.width, top + band), fill=water)
    for _ in range(8):
        x = scene.rng.uniform(0, scene.width)
        y = scene.rng.uniform(top + band * 0.2, top + band * 0.8)
        scene.draw.line((x, y, x + scene.width * 0.06, y), fill=ripple, width=max(1, scene.height // 300))


def _paint_camp(scene: _Scene) -> None:
    """A campfire (it is its own light, so it is not shaded) and a small tent behind it."""
    size = scene.width * 0.08
    x, base = scene.prop_x, scene.horizon + (scene.height - scene.horizon) * 0.35
    log, log_w = (90, 60, 40), max(2, round(size * 0.15))
    scene.draw.line((x - size, base, x + size, base - size * 0.2), fill=log, width=log_w)
    scene.draw.line((x - size, base - size * 0.2, x + size, base), fill=log, width=log_w)
    for k, colour in ((1.0, (240, 110, 30)), (0.6, (252, 210, 70))):
        half, foot = size * 0.6 * k, base - size * 0.1
        flame = [(x - half, foot), (x, base - size * 1.6 * k), (x + half, foot)]
        scene.draw.polygon(flame, fill=colour)
    tent_x = x + size * 2.5 * (1 if x < scene.width / 2 else -1)
    foot = scene.horizon + size * 0.4
    tent = [(tent_x - size * 1.2, foot), (tent_x, scene.horizon - size), (tent_x + size * 1.2, foot)]
    scene.draw.polygon(tent, fill=scene.colour((200, 170, 120)))


def _paint_road(scene: _Scene) -> None:
    w, h, horizon = scene.width, scene.height, scene.horizon
    road, edge = scene.colour((150, 120, 90)), scene.colour((120, 95, 70))
    scene.draw.polygon([(w * 0.46, horizon), (w * 0.54, horizon), (w * 0.95, h), (w * 0.05, h)], fill=road)
    for far_x, near_x in ((0.46, 0.05), (0.54, 0.95)):
        scene.draw.line((w * far_x, horizon, w * near_x, h), fill=edge, width=max(1, h // 250))


_SETTING_PAINTERS: dict[str, Callable[[_Scene], None]] = {
    "steppe": _paint_steppe,
    "bazaar": _paint_bazaar,
    "yurt": _paint_yurt,
    "village": _paint_village,
    "mountains": _paint_mountains,
    "river": _paint_river,
    "camp": _paint_camp,
    "road": _paint_road,
    "winter steppe": _paint_winter_steppe,
}


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------
# A figure is drawn in "head units" u around its feet at (x, feet_y), y growing upwards as
# negative numbers: hat top at -6.55u, shoulders at -4.6u, waist at -2.6u when standing.
# ``rise`` moves the upper body: sitting lowers it, riding lifts it onto the horse.

_RISE = {"sitting": -1.4, "crouching": -1.4, "riding": 2.0}
_HAT_TOP, _SHOULDERS, _WAIST = -6.55, -4.6, -2.6
KALPAK_COLOUR: RGB = (240, 234, 214)
HORSE_COLOUR: RGB = (110, 72, 46)
OTHER_COLOUR: RGB = (96, 84, 96)


@dataclass(frozen=True)
class _Placement:
    x: float
    feet_y: float
    u: float
    facing: int  # +1 faces right, -1 faces left


def _hero_placement(shot: Shot, width: int, height: int, horizon: int, hero_x: int) -> _Placement:
    rise = _RISE.get(shot.pose, 0.0)
    facing = _hero_facing(shot, width, hero_x)
    if shot.framing == "wide":
        u = height * 0.3 / (-_HAT_TOP + max(rise, 0.0))
        return _Placement(hero_x, horizon + (height - horizon) * 0.4, u, facing)
    if shot.framing == "medium":  # waist near the bottom edge, hat top at 20%
        u = height * 0.75 / (_WAIST - _HAT_TOP)
        return _Placement(hero_x, height * 0.95 + (-_WAIST + rise) * u, u, facing)
    u = height * 0.7 / (_SHOULDERS - _HAT_TOP)  # close-up: hat top at 8%, shoulders at 78%
    return _Placement(hero_x, height * 0.78 + (-_SHOULDERS + rise) * u, u, facing)


def _paint_figures(
    draw: ImageDraw.ImageDraw, shot: Shot, width: int, height: int, horizon: int, hero_x: int
) -> None:
    """The panel's subject in front: Aldar Kose in his kalpak, or, in a panel without him, the
    one it is about (``characters[0]``) bare-headed in the others' colour; one other beside."""
    hero = _hero_placement(shot, width, height, horizon, hero_x)
    with_him = hero_in(shot)
    others = shot.characters if with_him else shot.characters[1:]
    if others and shot.framing != "close-up":
        gap = 0.38 if shot.framing == "medium" else 0.18
        other = _Placement(hero.x + hero.facing * width * gap, hero.feet_y, hero.u * 0.92, -hero.facing)
        _paint_person(draw, other, "standing", OTHER_COLOUR, kalpak=False, rim=None)
    rim = (150, 160, 206) if shot.time_of_day == "night" else None
    if shot.pose == "riding" and shot.framing != "close-up":
        _paint_horse(draw, hero)
    _paint_person(draw, hero, shot.pose, FIGURE_COLOUR if with_him else OTHER_COLOUR, kalpak=with_him, rim=rim)


def _to_px(place: _Placement, x: float, y: float, rise: float = 0.0) -> Point:
    return (place.x + place.facing * x * place.u, place.feet_y + (y - rise) * place.u)


def _polygon(
    draw: ImageDraw.ImageDraw,
    place: _Placement,
    points: list[Point],
    fill: RGB,
    rise: float = 0.0,
    outline: RGB | None = None,
) -> None:
    draw.polygon([_to_px(place, x, y, rise) for x, y in points], fill=fill, outline=outline)


def _paint_horse(draw: ImageDraw.ImageDraw, place: _Placement) -> None:
    body = [(-1.8, -3.3), (-1.4, -3.7), (1.4, -3.7), (1.8, -3.3), (1.6, -2.3), (-1.7, -2.3)]
    neck = [(1.2, -3.6), (2.1, -5.0), (2.6, -4.9), (1.9, -3.0)]
    head = [(2.0, -5.2), (2.5, -5.3), (3.1, -4.5), (2.8, -4.3), (2.2, -4.6)]
    for points in (body, neck, head):
        _polygon(draw, place, points, HORSE_COLOUR)
    for leg_x in (-1.5, -1.0, 1.0, 1.4):
        left, right = leg_x - 0.15, leg_x + 0.15
        _polygon(draw, place, [(left, -2.5), (right, -2.5), (right, 0), (left, 0)], HORSE_COLOUR)
    tail = [_to_px(place, -1.8, -3.4), _to_px(place, -2.4, -1.8)]
    draw.line(tail, fill=HORSE_COLOUR, width=max(1, round(place.u * 0.25)))


def _paint_person(
    draw: ImageDraw.ImageDraw, place: _Placement, pose: str, colour: RGB, *, kalpak: bool, rim: RGB | None
) -> None:
    rise = _RISE.get(pose, 0.0)
    _paint_legs(draw, place, pose, colour)
    robe = [(-0.5, -4.8), (0.5, -4.8), (0.85, -4.5), (1.0, -1.5), (-1.0, -1.5), (-0.85, -4.5)]
    _polygon(draw, place, robe, colour, rise, outline=rim)
    _paint_arms(draw, place, pose, colour, rise)
    _polygon(draw, place, [(-0.18, -5.0), (0.18, -5.0), (0.18, -4.7), (-0.18, -4.7)], colour, rise)
    cx, cy = _to_px(place, 0.05, -5.35, rise)
    rx, ry = 0.44 * place.u, 0.5 * place.u
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour, outline=rim)
    if kalpak:
        _paint_kalpak(draw, place, rise)


def _paint_legs(draw: ImageDraw.ImageDraw, place: _Placement, pose: str, colour: RGB) -> None:
    if pose == "riding":  # one leg hangs along the horse's flank
        _polygon(draw, place, [(-0.1, -3.6), (0.3, -3.6), (0.3, -1.8), (-0.1, -1.8)], colour)
        return
    if pose in ("sitting", "crouching"):  # thighs forward, shins down
        _polygon(draw, place, [(-0.5, -1.2), (1.2, -1.2), (1.2, -0.6), (-0.5, -0.6)], colour)
        _polygon(draw, place, [(0.85, -0.8), (1.25, -0.8), (1.25, 0), (0.85, 0)], colour)
        return
    spread = 0.5 if pose in ("walking", "running") else 0.0
    for side in (-1, 1):
        hip_l, hip_r = sorted((side * 0.05, side * 0.45))
        foot_l, foot_r = hip_l + side * spread, hip_r + side * spread
        _polygon(draw, place, [(hip_l, -2.4), (hip_r, -2.4), (foot_r, 0), (foot_l, 0)], colour)


_FRONT_HAND: dict[str, Point] = {"pointing": (2.1, -4.5), "waving": (1.3, -6.2), "holding": (1.4, -3.4)}


def _paint_arms(draw: ImageDraw.ImageDraw, place: _Placement, pose: str, colour: RGB, rise: float) -> None:
    width = max(1, round(place.u * 0.32))
    back = (-0.7, -4.5), (-1.0, -2.5)
    front = (0.7, -4.5), _FRONT_HAND.get(pose, (1.0, -2.5))
    for (x0, y0), (x1, y1) in (back, front):
        draw.line((_to_px(place, x0, y0, rise), _to_px(place, x1, y1, rise)), fill=colour, width=width)
        hx, hy = _to_px(place, x1, y1, rise)
        r = width * 0.6
        draw.ellipse((hx - r, hy - r, hx + r, hy + r), fill=colour)
    if pose == "holding":
        hx, hy = _to_px(place, 1.55, -3.4, rise)
        r = place.u * 0.3
        draw.rectangle((hx - r, hy - r, hx + r, hy + r), fill=(186, 140, 60))


def _paint_kalpak(draw: ImageDraw.ImageDraw, place: _Placement, rise: float) -> None:
    """The white felt kalpak: a tall peaked crown over an upturned brim."""
    crown = [(-0.36, -5.66), (0.42, -5.66), (0.3, -6.05), (0.06, -6.5), (-0.22, -6.08)]
    brim = [(-0.5, -5.52), (0.52, -5.52), (0.58, -5.78), (0.06, -5.66), (-0.54, -5.78)]
    _polygon(draw, place, crown, KALPAK_COLOUR, rise, outline=FIGURE_COLOUR)
    _polygon(draw, place, brim, (214, 202, 176), rise, outline=FIGURE_COLOUR)


# ---------------------------------------------------------------------------------------
# Overlays
# ---------------------------------------------------------------------------------------


def _paint_number_badge(draw: ImageDraw.ImageDraw, number: int, height: int) -> None:
    font = load_font(max(12, height // 11), bold=True)
    text = str(number)
    margin = max(4, height // 48)
    pad = max(3, height // 80)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    box_w = max(right - left, bottom - top) + 2 * pad
    box = (margin, margin, margin + box_w, margin + (bottom - top) + 2 * pad)
    border = max(1, height // 256)
    draw.rounded_rectangle(box, radius=pad * 2, fill=(252, 250, 244), outline=FIGURE_COLOUR, width=border)
    text_x = box[0] + (box_w - (right - left)) / 2 - left
    draw.text((text_x, margin + pad - top), text, font=font, fill=FIGURE_COLOUR)


def _paint_picture_inset(image: Image.Image, picture: Image.Image) -> None:
    """The user's character picture, small, at the top left under the number badge: a sketch
    cannot draw their character, so it shows whose board this is."""
    height = image.height
    margin = max(4, height // 48)
    side = max(16, height // 5)
    thumb = picture.convert("RGB")
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    border = max(1, height // 128)
    top = margin + round(height * 0.13)  # below the badge (its font is a 1/11 of the height)
    box = (margin, top, margin + thumb.width + 2 * border, top + thumb.height + 2 * border)
    ImageDraw.Draw(image).rectangle(box, fill=(252, 250, 244), outline=FIGURE_COLOUR, width=max(1, border // 2))
    image.paste(thumb, (margin + border, top + border))


def _reference_note(request: FrameRequest) -> str:
    if request.picture is not None:
        return " · ref: your picture"
    return " · ref: frame 1" if request.reference is not None else ""


def _paint_description_band(image: Image.Image, description: str, reference_note: str) -> None:
    """Translucent dark band at the bottom: the English description and the honesty note."""
    width, height = image.size
    font = load_font(max(10, height // 30))
    note_font = load_font(max(9, height // 50))
    pad = max(4, height // 64)
    lines = wrap_text(description, font, width - 2 * pad, max_lines=3)
    line_h = round(font.size * 1.2)
    note_h = round(note_font.size * 1.3)
    band_top = height - (2 * pad + len(lines) * line_h + note_h)
    box = (0, band_top, width, height)
    region = image.crop(box)
    image.paste(Image.blend(region, Image.new("RGB", region.size, (0, 0, 0)), 0.58), box)
    draw = ImageDraw.Draw(image)
    for k, line in enumerate(lines):
        draw.text((pad, band_top + pad + k * line_h), line, font=font, fill=(250, 250, 250))
    note = PREVIEW_NOTE + reference_note
    note_w = draw.textlength(note, font=note_font)
    draw.text((width - pad - note_w, height - pad - note_h), note, font=note_font, fill=(214, 214, 214))


def _paint_preview_ribbon(image: Image.Image) -> None:
    """A red corner ribbon reading PREVIEW across the top-right corner."""
    ribbon = _preview_ribbon(image.height)
    corner = round(image.height * 0.16)  # the ribbon's centre sits on the corner diagonal
    x = image.width - corner - ribbon.width // 2
    y = corner - ribbon.height // 2
    image.paste(ribbon, (x, y), ribbon)


@functools.lru_cache(maxsize=8)
def _preview_ribbon(height: int) -> Image.Image:
    """Build the rotated ribbon once per panel height (the cached image is only ever pasted)."""
    thickness = max(12, round(height * 0.075))
    length = round(height * 0.6)
    font = load_font(max(8, round(thickness * 0.62)), bold=True)
    flat = Image.new("RGBA", (length, thickness), PREVIEW_MARK_COLOUR + (255,))
    draw = ImageDraw.Draw(flat)
    draw.text((length / 2, thickness / 2), "PREVIEW", font=font, fill=(255, 255, 255, 255), anchor="mm")
    return flat.rotate(-45, resample=Image.Resampling.BICUBIC, expand=True)
