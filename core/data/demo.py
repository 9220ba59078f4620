"""Procedural synthetic landmark photographs in the Google Landmarks v2 layout.

Why this exists: the workbench must be usable (and testable) without downloading
real data. The generator draws one distinct *shape* per landmark kind, and hides
everything else a shortcut learner could latch onto: colours come from one shared
material palette, the scene (sky, ground, light, viewpoint, occluders, noise) is
random, landmarks stand anywhere in the frame, and backlit dusk (dark silhouettes)
and floodlit night (bright on dark) make the landmark's brightness relative to its
surroundings a coin toss. A small CNN learns the shapes in a few epochs (about 0.83-0.88
held-out accuracy for resnet18 from scratch, 3 epochs at 64 px, 12 classes); a linear
model on 16x16 raw pixels stays near 0.4 (bench/demo_learnability.py).

Every image depends only on (seed, index, label, size), so output is byte-identical
across runs and the work could be split between processes.
"""
from __future__ import annotations

import csv
import hashlib
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from core.errors import UserError
from core.files import atomic_output

KINDS: dict[str, Callable] = {}  # kind name -> draw function, in class order
ASPECT: dict[str, float] = {}  # kind name -> width/height of its unit drawing box
TITLES: dict[str, str] = {}  # kind name -> readable category name
ZIPF_EXPONENT = 0.8  # counts ~ 1/rank^0.8, roughly the head/tail of real landmark data
MIN_PER_CLASS = 3
MIN_SIZE = 32
JPEG_QUALITY = 90
# the demo data set the app generates on first use (and `python -m core demo-data`'s defaults):
# classes, images in all, image side in px, seed
from core.data import DEMO_DEFAULTS  # noqa: E402 - declared where the CLI reads it without numpy
NOTE = (
    "This data set is SYNTHETIC: procedurally generated drawings of landmark-like "
    "shapes made by core/demo.py (seed {seed}), not real photographs.\n"
    "Use it to try the workbench end to end; accuracy on it says nothing about real "
    "landmark photos.\n"
)


class DemoArgumentError(UserError, ValueError):
    """Bad generate() argument: a ValueError for callers, a UserError for the CLI/pages."""


def kind(name: str, aspect: float, title: str):
    """Register a draw function: a registry keeps adding a kind a one-place change."""
    def register(fn):
        KINDS[name], ASPECT[name], TITLES[name] = fn, aspect, title
        return fn
    return register


# --------------------------------------------------------------------------- colours

# One palette for every kind, so colour alone never names the class.
MATERIALS = [
    (196, 178, 140), (150, 150, 150), (120, 80, 55), (232, 228, 218), (170, 70, 55),
    (90, 90, 100), (214, 186, 120), (95, 150, 130), (200, 160, 60), (60, 60, 70),
    (180, 110, 80), (210, 210, 225), (140, 120, 100), (190, 50, 40), (240, 240, 235),
]
# name: (top colour, horizon colour, weight, landmark light range, ambient light range).
# Backlit dusk turns landmarks into dark silhouettes and floodlit night makes them brighter
# than the sky, so whether the landmark is darker or lighter than its surroundings is a coin
# toss, not a class cue: a linear model on pixels cannot use the silhouette's sign.
SKIES = {
    "day": ((70, 130, 210), (175, 210, 240), 2.0, (0.85, 1.15), (0.9, 1.05)),
    "clear": ((40, 100, 200), (150, 195, 235), 1.5, (0.85, 1.15), (0.9, 1.05)),
    "overcast": ((150, 155, 165), (205, 205, 210), 1.5, (0.75, 1.0), (0.8, 0.95)),
    "haze": ((185, 190, 180), (225, 215, 190), 1.0, (0.8, 1.05), (0.85, 1.0)),
    "dusk": ((60, 50, 110), (245, 150, 80), 1.5, (0.2, 0.45), (0.35, 0.6)),
    "sunset": ((120, 60, 100), (250, 200, 110), 1.0, (0.2, 0.45), (0.35, 0.6)),
    "night": ((8, 12, 35), (35, 45, 85), 1.5, (1.0, 1.4), (0.2, 0.35)),
}
_SKY_NAMES, _SKY_WEIGHTS = list(SKIES), [v[2] for v in SKIES.values()]
GROUNDS = {
    "grass": (85, 130, 60), "sand": (200, 175, 125), "water": (55, 95, 130),
    "city": (115, 115, 120), "snow": (225, 230, 235),
}


def jitter(c, r: random.Random, amount: float = 18):
    """Colour variation; random() is several times cheaper than randint() per call."""
    return tuple(v + (2 * r.random() - 1) * amount for v in c)


def mix(a, b, t: float):
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b))


class Grade:
    """Global exposure/contrast/white balance, applied to every colour as it is drawn.

    Folding the grade into colours costs nothing per pixel, unlike an image filter.
    It is linear per channel, v' = v * gain + offset, so it is precomputed once.
    """

    def __init__(self, r: random.Random):
        bright, contrast = r.uniform(0.75, 1.2), r.uniform(0.75, 1.25)
        cast = (r.uniform(0.92, 1.08), r.uniform(0.95, 1.05), r.uniform(0.92, 1.08))
        self.gain = [m * contrast * bright for m in cast]
        self.offset = 128 * (1 - contrast) * bright

    def __call__(self, c, f: float = 1.0):
        """Graded colour of c seen under light factor f."""
        (ga, gb, gc), o = self.gain, self.offset
        return (_clamp(c[0] * f * ga + o), _clamp(c[1] * f * gb + o), _clamp(c[2] * f * gc + o))


def _clamp(v: float) -> int:
    return 0 if v < 0 else 255 if v > 255 else int(v)


# --------------------------------------------------------------------------- pen

_CIRCLE = [(math.cos(2 * math.pi * i / 20), math.sin(2 * math.pi * i / 20)) for i in range(20)]


class Pen:
    """Draws a landmark in unit coordinates (y: 0 ground .. 1 top, x centred, width = aspect).

    Viewpoint is a cheap projective warp of the points (squash, perspective taper,
    yaw, lean) so the landmark changes shape on screen without resampling pixels.
    """

    def __init__(self, draw, grade, r: random.Random, frame, cx, base, scale, aspect, light):
        self.draw, self.grade = draw, grade
        self.cx, self.base, self.s = cx, base, scale
        self.sx = r.uniform(0.8, 1.2)  # horizontal squash/stretch
        self.persp = r.uniform(-0.2, 0.06)  # looking up makes the top narrower
        self.yaw = r.uniform(-0.12, 0.12) / max(aspect / 2, 0.25)  # nearer side taller
        self.lean = r.uniform(-0.04, 0.04)
        self.sun = r.uniform(-1, 1)  # -1 sun at the left, +1 at the right
        self.light = light  # < 1 backlit silhouette, > 1 floodlit at night
        self.min_w = max(1, round(frame / 150))  # thinner lines vanish at 64 px

    def pt(self, x, y):
        X = self.cx + self.s * (self.sx * x * (1 + self.persp * y) + self.lean * y)
        return (X, self.base - self.s * y * (1 + self.yaw * x))

    def col(self, c, side=0.0):
        return self.grade(c, self.light * (1 + 0.3 * self.sun * side))

    def poly(self, pts, c, side=0.0):
        # pt() inlined: this loop is the hottest Python in the generator
        cx, base, s, sx, persp, lean, yaw = (self.cx, self.base, self.s, self.sx, self.persp,
                                             self.lean, self.yaw)
        xy = [(cx + s * (sx * x * (1 + persp * y) + lean * y), base - s * y * (1 + yaw * x))
              for x, y in pts]
        self.draw.polygon(xy, fill=self.col(c, side))

    def rect(self, x0, y0, x1, y1, c, side=0.0):
        self.poly(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), c, side)

    def line(self, pts, w, c, side=0.0):
        width = max(self.min_w, round(w * self.s * self.sx))
        self.draw.line([self.pt(x, y) for x, y in pts], fill=self.col(c, side), width=width)

    def arc_pts(self, x, y, rx, ry, a0=0.0, a1=math.pi, n=12):
        return [(x + rx * math.cos(a0 + (a1 - a0) * i / n), y + ry * math.sin(a0 + (a1 - a0) * i / n))
                for i in range(n + 1)]

    def ellipse(self, x, y, rx, ry, c, side=0.0):
        self.poly([(x + rx * cx, y + ry * cy) for cx, cy in _CIRCLE], c, side)


def dark(c, t=0.55):
    """Openings (doors, windows, arches) are shadowed: we cannot see through them."""
    return mix(c, (15, 15, 20), t)


# --------------------------------------------------------------------------- kinds
# Each draw(p, m, r) gets a Pen, materials m = (body, accent) and the image's Random.
# Registration order is class order: classes=N uses the first N kinds, so the first 12
# (the default) are the most distinct silhouettes; the tall thin look-alikes (statue,
# obelisk, lighthouse) come last.


@kind("tower", 0.62, "Synthetic: Eiffel-like lattice tower")
def draw_tower(p: Pen, m, r):
    body = m[0]
    half = lambda y: 0.025 + 0.28 * (1 - y) ** 2.6  # flared legs, thin spire
    levels = [0, 0.1, 0.2, 0.32, 0.45, 0.58, 0.72, 0.86, 0.95]
    left = [(-half(y), y) for y in levels]
    right = [(half(y), y) for y in levels]
    p.line(left, 0.045, body, -1)
    p.line(right, 0.045, body, 1)
    for a, b in zip(range(len(levels) - 1), range(1, len(levels))):
        p.line([left[a], right[b]], 0.02, body, 0)
        p.line([right[a], left[b]], 0.02, body, 0)
    p.line(p.arc_pts(0, 0, 0.16, 0.15, 0, math.pi), 0.025, body, 0)
    for y, t in ((0.2, 0.03), (0.45, 0.025), (0.86, 0.02)):
        w = half(y) + 0.03
        p.rect(-w, y - t / 2, w, y + t / 2, m[1], 0)
    p.line([(0, 0.95), (0, 1.0)], 0.012, body, 0)


@kind("arch", 0.95, "Synthetic: triumphal arch")
def draw_arch(p: Pen, m, r):
    body = m[0]
    gap = r.uniform(0.14, 0.2)
    spring = r.uniform(0.48, 0.58)
    p.rect(-0.45, 0, -gap, spring, body, -0.5)
    p.rect(gap, 0, 0.45, spring, body, 0.5)
    hole = p.arc_pts(0, spring, gap, gap * 1.1, math.pi, 0, 10)
    p.poly([(-0.45, spring)] + hole + [(0.45, spring), (0.45, 0.82), (-0.45, 0.82)], body)
    p.rect(-0.48, 0.8, 0.48, 0.85, m[1])
    p.rect(-0.42, 0.85, 0.42, 1.0, body, 0.3)
    p.poly([(0.45, 0), (0.5, 0.03), (0.5, 0.97), (0.45, 1.0)], body, 1.5)  # side face
    for x in (-0.31, 0.31):
        p.poly([(x - 0.05, 0.05)] + p.arc_pts(x, 0.3, 0.05, 0.05, math.pi, 0, 6)
               + [(x + 0.05, 0.05)], dark(body))
        p.rect(x - 0.07, 0.4, x + 0.07, 0.5, dark(body, 0.25))


@kind("dome", 1.0, "Synthetic: domed capitol")
def draw_dome(p: Pen, m, r):
    body, acc = m
    wing = r.uniform(0.12, 0.18)
    p.rect(-0.5, 0, 0.5, wing, body, 0)
    for i in range(8):  # wing windows
        x = -0.44 + i * 0.126
        p.rect(x - 0.02, wing * 0.35, x + 0.02, wing * 0.75, dark(body, 0.4))
    p.rect(-0.3, wing, 0.3, 0.38, body, 0.3)  # drum, ringed by columns
    for i in range(7):
        x = -0.25 + i * 0.083
        p.rect(x - 0.014, wing + 0.03, x + 0.014, 0.35, dark(body))
    p.rect(-0.33, 0.38, 0.33, 0.41, dark(acc, 0.2))
    # A big round dome: its curve, not the mass below, is what tells it from a pyramid.
    dome_c = acc if r.random() < 0.6 else body
    p.poly(p.arc_pts(0, 0.41, 0.35, 0.42, math.pi, math.pi / 2, 10) + [(0, 0.41)], dome_c, -1)
    p.poly(p.arc_pts(0, 0.41, 0.35, 0.42, math.pi / 2, 0, 10) + [(0, 0.41)], dome_c, 1)
    p.rect(-0.04, 0.8, 0.04, 0.93, body)
    p.ellipse(0, 0.95, 0.035, 0.035, dome_c)


@kind("pyramid", 1.5, "Synthetic: pyramid")
def draw_pyramid(p: Pen, m, r):
    body = m[0]
    if r.random() < 0.35:  # a smaller one behind, as at Giza
        sx = r.choice((-1, 1)) * 0.55
        p.poly([(sx - 0.35, 0.02), (sx + 0.35, 0.02), (sx, 0.5)], mix(body, (200, 200, 210), 0.3), 0.5)
    apex = (r.uniform(-0.12, 0.12), 1.0)
    corner = (r.uniform(-0.35, 0.35), 0)
    p.poly([(-0.75, 0), corner, apex], body, -1)
    p.poly([corner, (0.75, 0), apex], body, 1)
    if r.random() < 0.5:  # stepped variant: horizontal courses
        for i in range(1, 8):
            t = i / 8
            a = (-0.75 + (apex[0] + 0.75) * t, t)
            b = (0.75 + (apex[0] - 0.75) * t, t)
            p.line([a, b], 0.012, dark(body, 0.35))


@kind("bridge", 2.6, "Synthetic: suspension bridge")
def draw_bridge(p: Pen, m, r):
    body, acc = m
    deck = r.uniform(0.2, 0.3)
    sag = deck + r.uniform(0.05, 0.15)
    cable = [(x / 10, sag + (0.97 - sag) * (x / 7) ** 2) for x in range(-7, 8)]
    p.line([(-1.3, deck + 0.05)] + [cable[0]], 0.012, body)
    p.line([cable[-1], (1.3, deck + 0.05)], 0.012, body)
    p.line(cable, 0.025, body)
    for x, y in cable[1:-1]:
        p.line([(x, y), (x, deck)], 0.012, body)
    for tx in (-0.7, 0.7):
        p.rect(tx - 0.07, 0, tx + 0.07, deck - 0.02, dark(acc, 0.2))
        p.rect(tx - 0.055, 0, tx - 0.025, 1.0, body, -1)
        p.rect(tx + 0.025, 0, tx + 0.055, 1.0, body, 1)
        for y in (0.55, 0.8, 0.97):
            p.rect(tx - 0.05, y - 0.02, tx + 0.05, y + 0.02, body)
    p.rect(-1.3, deck - 0.03, 1.3, deck + 0.02, acc)


@kind("pagoda", 0.85, "Synthetic: tiered pagoda")
def draw_pagoda(p: Pen, m, r):
    body, acc = m
    n = r.randint(3, 5)
    h = 0.86 / n
    for i in range(n):
        y0 = i * h
        bw = 0.2 * (1 - 0.1 * i)
        rw = bw + 0.2  # wide eaves: the stack of roofs is the pagoda's signature
        p.rect(-bw, y0, bw, y0 + h * 0.6, body, 0.4)
        p.rect(-bw * 0.3, y0, bw * 0.3, y0 + h * 0.4, dark(body))
        p.poly([(-rw, y0 + h * 0.8), (-rw + 0.1, y0 + h * 0.55), (rw - 0.1, y0 + h * 0.55),
                (rw, y0 + h * 0.8), (bw * 0.7, y0 + h), (-bw * 0.7, y0 + h)], acc, 0.5)
    p.line([(0, 0.86), (0, 1.0)], 0.025, acc)
    for y in (0.9, 0.94):
        p.rect(-0.04, y - 0.01, 0.04, y + 0.01, acc)


@kind("ferris_wheel", 1.0, "Synthetic: observation wheel")
def draw_ferris_wheel(p: Pen, m, r):
    body, acc = m
    c, rad = (0, 0.56), 0.42
    p.line([(-0.28, 0), c, (0.28, 0)], 0.04, dark(body, 0.3))
    ring = [(c[0] + rad * x, c[1] + rad * y) for x, y in _CIRCLE]
    p.line(ring + ring[:1], 0.03, body)
    inner = [(c[0] + rad * 0.85 * x, c[1] + rad * 0.85 * y) for x, y in _CIRCLE]
    p.line(inner + inner[:1], 0.012, body)
    for x, y in ring[::2]:
        p.line([c, (x, y)], 0.012, body)
    for x, y in ring[1::2]:
        p.rect(x - 0.03, y - 0.06, x + 0.03, y - 0.01, acc, 0.5)
    p.ellipse(c[0], c[1], 0.04, 0.04, dark(body, 0.3))
    p.rect(-0.35, 0, 0.35, 0.04, dark(acc, 0.3))


@kind("colosseum", 2.0, "Synthetic: colosseum ring")
def draw_colosseum(p: Pen, m, r):
    body = m[0]
    xs = [i / 10 - 1 for i in range(21)]
    ruin = r.random() < 0.6  # the famous broken side
    top = [(x, 0.9 - 0.12 * x * x - (0.25 if ruin and x > 0.35 else 0)) for x in xs]
    p.poly([(-1, 0.05), (1, 0.05)] + top[::-1], body, 0.3)
    p.poly([(-1, 0), (1, 0), (1, 0.05), (-1, 0.05)], dark(body, 0.2))
    for row in range(3):
        y0 = 0.1 + row * 0.24
        for i in range(11):
            x = -0.9 + i * 0.18
            if y0 + 0.17 > top[round((x + 1) * 10)][1]:
                continue
            p.poly([(x - 0.05, y0)] + p.arc_pts(x, y0 + 0.12, 0.05, 0.05, math.pi, 0, 4)
                   + [(x + 0.05, y0)], dark(body))
        p.line([(-1, y0 - 0.02), (1, y0 - 0.02)], 0.015, dark(body, 0.15))


@kind("skyscraper", 0.5, "Synthetic: stepped skyscraper")
def draw_skyscraper(p: Pen, m, r):
    body, acc = m
    steps = r.randint(2, 3)
    y, w = 0.0, 0.25
    win = dark(acc, 0.3)
    for i in range(steps):
        y1 = y + (0.92 - y) * (0.6 if i < steps - 1 else 1)
        edge = w * r.uniform(0.2, 0.5)  # corner between the two visible faces
        p.rect(-w, y, edge, y1, body, -1)
        p.rect(edge, y, w, y1, body, 1)
        for k in range(int((y1 - y) / 0.05)):  # window grid: the facade texture
            wy = y + 0.025 + k * 0.05
            p.line([(-w + 0.03, wy), (w - 0.03, wy)], 0.018, win)
        for x in (-w / 2, w / 2):
            p.line([(x, y), (x, y1)], 0.02, body, 1 if x > edge else -1)
        y, w = y1, w * 0.65
    p.line([(0, y), (0, 1.0)], 0.015, acc)


@kind("windmill", 1.0, "Synthetic: windmill")
def draw_windmill(p: Pen, m, r):
    body, acc = m
    p.poly([(-0.15, 0), (0.15, 0), (0.09, 0.6), (-0.09, 0.6)], body, 0.5)
    p.poly(p.arc_pts(0, 0.6, 0.11, 0.09, 0, math.pi, 8), acc, 0.5)
    p.poly([(-0.03, 0)] + p.arc_pts(0, 0.1, 0.03, 0.03, math.pi, 0, 4) + [(0.03, 0)], dark(body))
    hub = (0, 0.63)
    spin = r.uniform(0, math.pi / 2)
    sail_c = mix(acc, (235, 230, 220), r.uniform(0, 0.7))
    for k in range(4):
        a = spin + k * math.pi / 2
        d, n = (math.cos(a), math.sin(a)), (-math.sin(a), math.cos(a))
        pt = lambda t, o: (hub[0] + d[0] * t + n[0] * o, hub[1] + d[1] * t + n[1] * o)
        p.poly([pt(0.1, 0), pt(0.45, 0), pt(0.45, 0.11), pt(0.1, 0.11)], sail_c)
        p.line([hub, pt(0.46, 0)], 0.02, dark(body, 0.4))
    p.ellipse(hub[0], hub[1], 0.025, 0.025, dark(body, 0.5))


@kind("temple", 1.6, "Synthetic: columned temple")
def draw_temple(p: Pen, m, r):
    body = m[0]
    p.rect(-0.8, 0, 0.8, 0.05, body, 0.4)
    p.rect(-0.76, 0.05, 0.76, 0.1, body, 0.2)
    p.rect(-0.7, 0.1, 0.7, 0.62, dark(body, 0.6))  # shadowed cella behind the columns
    n = r.choice((6, 8))
    for i in range(n):
        x = -0.68 + i * 1.36 / (n - 1)
        top = 0.62 if r.random() > 0.12 else r.uniform(0.25, 0.5)  # broken column
        p.rect(x - 0.035, 0.1, x + 0.035, top, body, -0.5)
        p.rect(x + 0.005, 0.1, x + 0.035, top, body, 1)
    p.rect(-0.76, 0.62, 0.76, 0.72, body, 0.2)
    if r.random() < 0.75:
        p.poly([(-0.78, 0.72), (0.78, 0.72), (0, 0.95)], body, 0.5)
        p.poly([(-0.6, 0.74), (0.6, 0.74), (0, 0.91)], dark(body, 0.25))


@kind("torii", 1.3, "Synthetic: torii gate")
def draw_torii(p: Pen, m, r):
    body, acc = m
    p.poly([(-0.52, 0), (-0.4, 0), (-0.42, 0.86), (-0.49, 0.86)], body, -1)
    p.poly([(0.4, 0), (0.52, 0), (0.49, 0.86), (0.42, 0.86)], body, 1)
    p.rect(-0.6, 0.62, 0.6, 0.71, body)
    p.rect(-0.04, 0.71, 0.04, 0.86, body)
    lift = r.uniform(0.05, 0.1)  # upturned kasagi ends overhang the pillars
    p.poly([(-0.68, 0.9 + lift), (-0.56, 0.85), (0.56, 0.85), (0.68, 0.9 + lift),
            (0.56, 0.94), (-0.56, 0.94)], acc)
    p.rect(-0.57, 0.94, 0.57, 0.98, dark(acc, 0.3))


@kind("castle", 1.7, "Synthetic: castle with towers")
def draw_castle(p: Pen, m, r):
    body, acc = m
    wall = r.uniform(0.35, 0.45)
    p.rect(-0.62, 0, 0.62, wall, body, 0.3)
    for i in range(9):
        x = -0.55 + i * 0.1375
        p.rect(x - 0.03, wall, x + 0.03, wall + 0.05, body, 0.3)
    p.rect(-0.2, 0, 0.2, 0.78, body, 0.6)
    p.poly([(-0.08, 0)] + p.arc_pts(0, 0.15, 0.08, 0.08, math.pi, 0, 6) + [(0.08, 0)], dark(body))
    for tx in (-0.72, 0.72):
        p.rect(tx - 0.12, 0, tx + 0.12, 0.68, body, 1 if tx > 0 else -1)
        p.rect(tx - 0.03, 0.4, tx + 0.03, 0.5, dark(body))
        p.poly([(tx - 0.15, 0.68), (tx + 0.15, 0.68), (tx, 0.98)], acc, 0.5)
    p.poly([(-0.23, 0.78), (0.23, 0.78), (0, 1.0)], acc, 0.5)


@kind("statue", 0.5, "Synthetic: statue on a pedestal")
def draw_statue(p: Pen, m, r):
    body, acc = m
    p.rect(-0.17, 0, 0.17, 0.3, acc, 0.5)
    p.rect(-0.19, 0.3, 0.19, 0.34, dark(acc, 0.2))
    p.poly([(-0.1, 0.34), (0.1, 0.34), (0.055, 0.78), (-0.055, 0.78)], body, -0.5)
    p.poly([(0.0, 0.34), (0.1, 0.34), (0.055, 0.78), (0.01, 0.78)], body, 1)
    p.ellipse(0, 0.83, 0.045, 0.055, body, 0.5)
    arm = r.choice((-1, 1))  # torch in the left or right hand
    p.line([(arm * 0.04, 0.74), (arm * 0.12, 0.95)], 0.035, body, arm)
    p.ellipse(arm * 0.125, 0.98, 0.025, 0.035, (250, 200, 90))
    p.rect(-arm * 0.1, 0.55, -arm * 0.04, 0.68, body, -arm)
    p.poly([(-0.05, 0.87), (0.05, 0.87), (0.0, 0.93)], body)


@kind("obelisk", 0.22, "Synthetic: obelisk")
def draw_obelisk(p: Pen, m, r):
    body, acc = m
    p.rect(-0.11, 0, 0.11, 0.05, acc, 0.5)
    p.rect(-0.085, 0.05, 0.085, 0.09, acc, 0.3)
    e = r.uniform(-0.03, 0.03)  # the visible edge between the two lit faces
    p.poly([(-0.06, 0.09), (e, 0.09), (e * 0.6, 0.9), (-0.038, 0.9)], body, -1)
    p.poly([(e, 0.09), (0.06, 0.09), (0.038, 0.9), (e * 0.6, 0.9)], body, 1)
    p.poly([(-0.038, 0.9), (e * 0.6, 0.9), (0, 1.0)], body, -0.5)
    p.poly([(e * 0.6, 0.9), (0.038, 0.9), (0, 1.0)], body, 1.5)


@kind("lighthouse", 0.5, "Synthetic: striped lighthouse")
def draw_lighthouse(p: Pen, m, r):
    body, acc = m
    half = lambda y: 0.1 - 0.045 * y / 0.75
    bands = r.randint(3, 6)
    for i in range(bands):
        y0, y1 = 0.75 * i / bands, 0.75 * (i + 1) / bands
        c = body if i % 2 == 0 else acc
        p.poly([(-half(y0), y0), (half(y0), y0), (half(y1), y1), (-half(y1), y1)], c, 0.5)
    p.rect(-0.09, 0.75, 0.09, 0.785, dark(body, 0.4))
    glass = (250, 235, 150) if r.random() < 0.5 else (60, 70, 80)
    p.rect(-0.048, 0.785, 0.048, 0.88, glass)
    p.poly(p.arc_pts(0, 0.88, 0.06, 0.07, 0, math.pi, 8), dark(acc, 0.2), 0.5)
    p.line([(0, 0.95), (0, 1.0)], 0.01, dark(acc, 0.3))
    if r.random() < 0.5:  # keeper's house
        hx = r.choice((-1, 1))
        x0, x1 = sorted((hx * 0.09, hx * 0.24))
        p.rect(x0, 0, x1, 0.1, body, hx)
        p.poly([(x0 - 0.01, 0.1), (x1 + 0.01, 0.1), ((x0 + x1) / 2, 0.16)], acc)


# --------------------------------------------------------------------------- scene


def sky(S: int, r: random.Random, grade: Grade) -> tuple[Image.Image, str, tuple]:
    """Vertical gradient: a 1-pixel-wide column stretched, far cheaper than per-pixel maths.

    Returns the image, the sky's name and its mean colour behind a landmark (upper 70%).
    """
    name = r.choices(_SKY_NAMES, _SKY_WEIGHTS)[0]
    top, low = (grade(jitter(c, r, 15)) for c in SKIES[name][:2])
    t = np.linspace(0.0, 1.0, S)[:, None] ** r.uniform(0.6, 1.6)
    col = np.asarray(top) * (1 - t) + np.asarray(low) * t
    img = Image.fromarray(col.astype(np.uint8)[:, None, :]).resize((S, S), Image.NEAREST)
    return img, name, tuple(col[: int(S * 0.7)].mean(0))


def clouds(d: ImageDraw.ImageDraw, S, r, grade, sky_name, ambient):
    base = (250, 250, 250) if sky_name in ("day", "clear") else (210, 170, 170)
    base = tuple(v * ambient for v in base)
    for _ in range(r.randint(0, 3)):
        x, y, w = r.uniform(0, S), r.uniform(0, S * 0.4), r.uniform(0.08, 0.25) * S
        c = grade(jitter(base, r, 20))
        for _ in range(r.randint(2, 4)):
            dx, dy, rr = r.uniform(-w, w), r.uniform(-w / 4, w / 4), r.uniform(0.3, 0.6) * w
            d.ellipse((x + dx - rr, y + dy - rr * 0.6, x + dx + rr, y + dy + rr * 0.6), fill=c)


def ground(d, S, r, grade, horizon, roll, ambient) -> str:
    name = r.choice(list(GROUNDS))
    c = grade(jitter(GROUNDS[name], r, 20), ambient)
    d.polygon([(0, horizon - roll), (S, horizon + roll), (S, S), (0, S)], fill=c)
    for _ in range(r.randint(2, 8)):  # texture strokes: ripples, dunes, paving, tufts
        y = r.uniform(horizon + abs(roll), S)
        x, w = r.uniform(0, S), r.uniform(0.05, 0.4) * S
        d.line((x, y, x + w, y + r.uniform(-3, 3)), fill=grade(jitter(c, r, 30)),
               width=max(1, S // 128))
    return name


def skyline(d, S, r, grade, horizon, ambient):
    """Low distant blocks: clutter with edges, kept short so it never looks like a tower."""
    x = r.uniform(-0.1, 0.1) * S
    c0 = jitter((120, 125, 135), r, 25)
    c0 = tuple(v * ambient for v in c0)
    while x < S:
        w, h = r.uniform(0.04, 0.12) * S, r.uniform(0.02, 0.1) * S
        d.rectangle((x, horizon - h, x + w, horizon + 2), fill=grade(jitter(c0, r, 12)))
        x += w * r.uniform(0.7, 1.3)


def occluders(d, S, r, grade, light):
    """Foreground trees, people and buildings that partly hide the landmark."""
    for _ in range(r.choice((0, 0, 0, 0, 0, 0, 1, 1, 2))):
        x, y = r.uniform(0, S), r.uniform(0.8, 1.05) * S
        h = r.uniform(0.08, 0.25) * S
        pick = r.random()
        if pick < 0.45:
            green = grade(jitter((60, 110, 50), r, 30), light)
            d.rectangle((x - h * 0.05, y - h * 0.5, x + h * 0.05, y), fill=grade((70, 50, 35)))
            for _ in range(r.randint(1, 3)):
                ox, oy, rr = r.uniform(-h / 5, h / 5), r.uniform(0.55, 0.85) * h, r.uniform(0.2, 0.33) * h
                d.ellipse((x + ox - rr, y - oy - rr, x + ox + rr, y - oy + rr), fill=green)
        elif pick < 0.8:
            h *= 0.6
            c = grade(jitter((70, 60, 80), r, 60), light)
            d.rounded_rectangle((x - h * 0.14, y - h * 0.8, x + h * 0.14, y), h * 0.1, fill=c)
            d.ellipse((x - h * 0.09, y - h, x + h * 0.09, y - h * 0.8), fill=grade((190, 150, 120)))
        else:
            c = grade(jitter(r.choice(MATERIALS), r, 20), light)
            w = r.uniform(0.1, 0.25) * S
            d.rectangle((x, y - h, x + w, S), fill=c)
            for k in range(int(h // (S * 0.05))):
                wy = y - h + S * 0.02 + k * S * 0.05
                d.line((x + w * 0.1, wy, x + w * 0.9, wy), fill=dark(c, 0.5), width=max(1, S // 100))


def place(d, grade, r, S, name, horizon, light) -> Pen:
    """Scale and position: big enough to read at 64 px, anywhere across the frame.

    Wide kinds get less than proportional width, so a bridge is cropped at the sides
    rather than shrunk to a thin line. Free placement costs a CNN (pooled features)
    nothing but smears any fixed pixel template a linear model could learn.
    """
    aspect = ASPECT[name]
    scale = r.uniform(0.6, 0.92) * S / max(aspect, 1.0) ** 0.55
    w = scale * aspect
    cx = r.uniform(min(0.3 * w, S / 2), max(S - 0.3 * w, S / 2))
    base = horizon + r.uniform(-0.02, 0.15) * S
    base = min(max(base, scale * 0.97), S * 0.99)  # the very top may touch the frame
    return Pen(d, grade, r, S, cx, base, scale, aspect, light)


_NOISE: dict[tuple[int, int], Image.Image] = {}


def noise_bank(n: int, level: int) -> Image.Image:
    """A fixed RGB noise field centred on 128 that images crop from.

    Drawing fresh normals per image is slow; a seeded bank is fast and deterministic.
    """
    if (n, level) not in _NOISE:
        field = np.random.default_rng(20240 + level).normal(128, 4 * level, (n, n, 3))
        _NOISE[n, level] = Image.fromarray(field.round().clip(0, 255).astype(np.uint8))
    return _NOISE[n, level]


def finish(img: Image.Image, r: random.Random, size: int) -> Image.Image:
    """Downsample the 2x canvas (antialiasing), sometimes softly out of focus, then add sensor noise."""
    if r.random() < 0.1:  # out of focus: through a 4x-smaller image, far cheaper than GaussianBlur
        img = img.reduce(4).resize((size, size), Image.BILINEAR)
    else:
        img = img.reduce(2)
    level = r.choice((0, 1, 1, 2))
    if not level:
        return img
    bank = noise_bank(max(256, 2 * size), level)
    ox, oy = int(r.random() * (bank.width - size)), int(r.random() * (bank.height - size))
    return ImageChops.add(img, bank.crop((ox, oy, ox + size, oy + size)), offset=-128)


def luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def materials(r: random.Random, pen: Pen, sky_rgb, min_contrast: float = 45) -> tuple:
    """(body, accent) from the shared palette; the body must stand out from the sky.

    Either polarity is fine, but a grey tower lost in a grey sky teaches nothing.
    """
    for _ in range(6):
        body, acc = r.sample(MATERIALS, 2)
        body = jitter(body, r)
        if abs(luma(pen.col(body)) - luma(sky_rgb)) >= min_contrast:
            break
    return body, jitter(acc, r)


def draw_landmark(name: str, seed: int, index: int, size: int, with_mask: bool = False):
    """One photo of landmark kind `name`; drawn at 2x and box-downsampled for antialiasing.
    `with_mask`: also return the landmark's pixels (an "L" image, 255 = structure, before
    occluders), to check that explanations point at the structure rather than the sky."""
    r = random.Random(f"landmark-demo:{seed}:{index}")
    S = size * 2
    grade = Grade(r)
    img, sky_name, sky_rgb = sky(S, r, grade)
    d = ImageDraw.Draw(img)
    light, ambient = (r.uniform(*SKIES[sky_name][k]) for k in (3, 4))
    clouds(d, S, r, grade, sky_name, ambient)
    horizon, roll = r.uniform(0.55, 0.85) * S, r.uniform(-0.04, 0.04) * S
    ground_name = ground(d, S, r, grade, horizon, roll, ambient)
    if ground_name == "city":
        skyline(d, S, r, grade, horizon, ambient)
    pen = place(d, grade, r, S, name, horizon, light)
    before = img.copy() if with_mask else None
    KINDS[name](pen, materials(r, pen, sky_rgb), r)
    mask = None
    if with_mask:
        diff = ImageChops.difference(img, before).convert("L")
        mask = diff.point(lambda v: 255 if v else 0).resize((size, size), Image.BOX)
        mask = mask.point(lambda v: 255 if v >= 128 else 0)
    occluders(d, S, r, grade, ambient)
    out = finish(img, r, size)
    return (out, mask) if with_mask else out


# --------------------------------------------------------------------------- data set


def planned_counts(classes: int, images: int) -> list[int]:
    """Zipf-like long tail, at least MIN_PER_CLASS each, summing exactly to `images`.

    Largest-remainder rounding keeps the counts non-increasing, so class 0 is the head.
    """
    w = [1 / (i + 1) ** ZIPF_EXPONENT for i in range(classes)]
    spare = images - MIN_PER_CLASS * classes
    raw = [MIN_PER_CLASS + spare * x / sum(w) for x in w]
    counts = [int(x) for x in raw]
    order = sorted(range(classes), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: images - sum(counts)]:
        counts[i] += 1
    return counts


def image_id(seed: int, index: int) -> str:
    return hashlib.blake2b(f"landmark-demo:{seed}:{index}".encode(), digest_size=8).hexdigest()


def labels_for(seed: int, counts: list[int]) -> list[int]:
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    random.Random(f"landmark-demo-labels:{seed}:{len(counts)}:{len(labels)}").shuffle(labels)
    return labels


def check_args(classes, images, size) -> None:
    for name, v in (("classes", classes), ("images", images), ("size", size)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise DemoArgumentError(f"{name} must be a whole number, got {v!r}.")
    if not 2 <= classes <= len(KINDS):
        raise DemoArgumentError(f"classes must be between 2 and {len(KINDS)} (one per landmark kind), got {classes}.")
    if images < classes * MIN_PER_CLASS:
        raise DemoArgumentError(
            f"images must be at least {classes * MIN_PER_CLASS} ({MIN_PER_CLASS} per class for {classes} classes), got {images}.")
    if size < MIN_SIZE:
        raise DemoArgumentError(f"size must be at least {MIN_SIZE} pixels, got {size}.")


def write_csv(path: Path, header, rows) -> None:
    """Write beside and rename, so a reader never sees half a CSV."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def generate(out, classes: int = DEMO_DEFAULTS["classes"], images: int = DEMO_DEFAULTS["images"],
             size: int = DEMO_DEFAULTS["size"], seed: int = DEMO_DEFAULTS["seed"], progress=None) -> dict:
    """Write a synthetic data set in the Google Landmarks v2 layout under `out`; return a summary.

    train.csv is written last, so a directory with train.csv is a finished data set.
    """
    check_args(classes, images, size)
    t0 = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / "SYNTHETIC.txt").write_text(NOTE.format(seed=seed))
    names = list(KINDS)[:classes]
    counts = planned_counts(classes, images)
    rows, made = [], set()
    every = max(1, images // 100)
    for i, label in enumerate(labels_for(seed, counts)):
        iid = image_id(seed, i)
        folder = root / "train" / iid[0] / iid[1] / iid[2]
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        draw_landmark(names[label], seed, i, size).save(folder / f"{iid}.jpg", quality=JPEG_QUALITY)
        rows.append((iid, f"synthetic://{names[label]}/{iid}", label))
        if progress and ((i + 1) % every == 0 or i + 1 == images):
            progress(i + 1, images)
    write_csv(root / "train_label_to_category.csv", ("landmark_id", "category"),
              [(c, TITLES[n]) for c, n in enumerate(names)])
    write_csv(root / "train.csv", ("id", "url", "landmark_id"), rows)
    return {"root": str(root), "classes": classes, "images": images, "size": size, "seed": seed,
            "counts": dict(enumerate(counts)), "seconds": time.perf_counter() - t0}
