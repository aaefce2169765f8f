"""Synthetic CPSC-like 12-lead ECGs whose evidence is known, written as an ordinary store.

Each beat is a sum of Gaussian waves (McSharry et al. 2003) on a 3-D heart vector (x to the
patient's left, y inferior, z anterior). The leads I, II and V1..V6 are its projections through
Dower's transform (Dower, Machado & Osborne 1980: the published 8 x 3 coefficients from the Frank
vectorcardiogram), per subject with the heart rotated in 3-D (up to 30 degrees about each axis) and
with lead gains and projection jitter; III, aVR, aVL and aVF follow from I and II, so the limb
leads obey Einthoven's law (III = II - I, aVR = -(I + II)/2, ...). Noise is drawn per electrode
(RA, LA, LL, C1..C6) and combined the way an ECG machine combines them; recording artefacts
(band-limiting, lead-off, saturation) act on the recorded channels I, II, V1..V6, from which the
machine derives the other four, so every record obeys the same lead identities.

Class signatures, from clinical criteria: AF (irregular RR with a coefficient of variation of
0.15-0.35, no P, f-waves of 4-9 Hz at 15-70 uV RMS, strongest in V1), I-AVB (PR 210-400 ms;
otherwise 120-200 ms), LBBB (QRS 120-180 ms, broad notched R in I, aVL, V5-V6, no septal q, QS in
V1, discordant ST-T), RBBB (QRS 120-160 ms, rsR' in V1, wide S in I and V6, discordant T), PAC
(coupling 60-85% of the RR, a P of another axis, non-compensatory pause), PVC (coupling 50-80%, no
P, QRS 120-180 ms of random axis, discordant T, full compensatory pause), STD/STE (a J-point and
ST shift of CPSC-like size in one territory, with reciprocal change in the opposite leads), Normal
(sinus rhythm 55-100 bpm). Nuisance is randomised widely: baseline wander, muscle noise with
bursts, 50/60 Hz mains, electrode-motion bursts, amplitude, band-limiting, lead-off and saturated
segments, CPSC-like lengths.

Every record lists where its labels show (``Record.evidence``, end exclusive): the whole record for
AF and Normal, P onset to QRS onset per beat for I-AVB, the QRS per conducted beat for LBBB/RBBB,
J point to T peak per conducted beat for STD/STE, and the whole ectopic beat (P or QRS onset to T
end) for PAC/PVC. Ectopic beats recur at least every 5 s, so every 2,880-sample training crop of a
PAC or PVC record holds one.

Record ``i`` depends only on ``(seed, i)`` and the generator options, so a store of 100 records is a
prefix of one of 2,000 with the same seed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from xecg.classes import CLASSES, LEADS, NUM_LEADS, multi_hot
from xecg.data.record import Record
from xecg.data.store import StoreError, StoreWriter, is_current, is_store

#: Bump whenever the generated signals or evidence change; part of the store fingerprint.
GENERATOR_VERSION = 2

#: CPSC 2018 label sets with their counts in the official REFERENCE.csv (6,877 records, 476 of
#: them multilabel). AF+PAC (4 records) is left out: a PAC needs sinus rhythm to be premature to.
_CPSC_LABEL_SETS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("RBBB",), 1533), (("AF",), 976), (("Normal",), 918), (("STD",), 784), (("I-AVB",), 686),
    (("PVC",), 607), (("PAC",), 533), (("STE",), 185), (("LBBB",), 179),
    (("AF", "RBBB"), 172), (("PAC", "RBBB"), 52), (("PVC", "RBBB"), 51), (("AF", "STD"), 30),
    (("AF", "LBBB"), 26), (("RBBB", "STD"), 20), (("PVC", "STD"), 18), (("RBBB", "STE"), 16),
    (("I-AVB", "RBBB"), 10), (("LBBB", "PAC"), 10), (("I-AVB", "LBBB"), 8), (("AF", "PVC"), 8),
    (("LBBB", "PVC"), 6), (("PAC", "STD"), 6), (("I-AVB", "STD"), 6), (("I-AVB", "PVC"), 5),
    (("I-AVB", "STE"), 4), (("LBBB", "STE"), 4), (("PAC", "RBBB", "STE"), 3), (("PAC", "PVC"), 3),
    (("I-AVB", "PAC"), 3), (("AF", "LBBB", "STD"), 3), (("AF", "STE"), 2), (("PAC", "STE"), 2),
    (("STD", "STE"), 2), (("PVC", "STE"), 2),
)
_SETS = [s for s, _ in _CPSC_LABEL_SETS]
_SET_P = np.array([c for _, c in _CPSC_LABEL_SETS], dtype=np.float64)
_SET_P /= _SET_P.sum()
assert {c for s in _SETS for c in s} == set(CLASSES), "label table out of step with CLASSES"

#: Label pairs that cannot be simulated together.
_EXCLUSIVE = ({"AF", "I-AVB"}, {"AF", "PAC"}, {"LBBB", "RBBB"})

#: An ectopic beat is forced once the next beat would come this long (s) after the last ectopic
#: beat of its class; with the coupling interval (and, when PAC and PVC are both due, one more
#: beat) ectopic beats of a class stay under about 5.5 s apart, and the gaps between their
#: evidence spans under the 5.76 s of a 2,880-sample training crop.
_MAX_ECTOPIC_GAP_S = 3.0

_SINUS, _PAC, _PVC = 0, 1, 2


# --------------------------------------------------------------------------------------------
# Geometry: lead and electrode matrices.

def _unit(*v: float) -> np.ndarray:
    a = np.array(v, dtype=np.float64)
    return a / np.linalg.norm(a)


#: Dower's transform (Dower, Machado & Osborne, Clin. Cardiol. 3, 1980): rows I, II, V1..V6,
#: columns the Frank leads X (right to left), Y (head to feet), Z (front to back), in mV per mV.
DOWER = np.array([
    [0.632, -0.235, 0.059],   # I
    [0.235, 1.066, -0.132],   # II
    [-0.515, 0.157, -0.917],  # V1
    [0.044, 0.164, -1.387],   # V2
    [0.882, 0.098, -1.277],   # V3
    [1.213, 0.127, -0.601],   # V4
    [1.125, 0.127, -0.086],   # V5
    [0.831, 0.076, 0.230],    # V6
])
#: The recorded channels (I, II, V1..V6): the rows of :data:`DOWER`, in lead order.
RECORDED = np.array([LEADS.index(name) for name in ("I", "II", "V1", "V2", "V3", "V4", "V5",
                                                    "V6")])
#: Limb leads from I and II (rows III, aVR, aVL, aVF; columns I, II).
_DERIVED_LIMB = np.array([[-1.0, 1.0], [-0.5, -0.5], [1.0, -0.5], [-0.5, 1.0]])
_DERIVED = np.array([LEADS.index(name) for name in ("III", "aVR", "aVL", "aVF")])


def derive_leads(recorded: np.ndarray) -> np.ndarray:
    """The 12 leads (``12 x ...``) from the 8 recorded channels I, II, V1..V6 (``8 x ...``), as an
    ECG machine derives III, aVR, aVL and aVF."""
    out = np.empty((NUM_LEADS, *recorded.shape[1:]), dtype=recorded.dtype)
    out[RECORDED] = recorded
    out[_DERIVED] = np.einsum("dk,k...->d...", _DERIVED_LIMB, recorded[:2])
    return out


def _lead_matrix() -> np.ndarray:
    """``12 x 3``: each lead's voltage is its row dotted with the heart vector (xecg's axes: x
    left, y inferior, z anterior, so Frank's Z is -z)."""
    return derive_leads(DOWER * np.array([1.0, 1.0, -1.0]))


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation about x, then y, then z (radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


#: Per-subject geometry: rotation of the heart about each axis (degrees), lead gain (log-normal
#: sigma) and projection jitter (relative to each row's norm).
MAX_ROTATION_DEG = 30.0
_GAIN_SIGMA = 0.12
_JITTER = 0.12


def subject_lead_matrix(rng: np.random.Generator) -> np.ndarray:
    """``12 x 3`` lead matrix of one subject: Dower's rows with jitter and gain per recorded
    channel (electrode placement, body shape), for a heart rotated by up to 30 degrees about each
    axis; III, aVR, aVL and aVF derived from I and II."""
    rec = DOWER * np.array([1.0, 1.0, -1.0])
    norms = np.linalg.norm(rec, axis=1, keepdims=True)
    rec = rec + _JITTER * norms * rng.normal(size=rec.shape)
    rec = rec * np.exp(_GAIN_SIGMA * rng.normal(size=(len(rec), 1)))
    angles = np.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, size=3))
    return derive_leads(rec @ _rotation(*angles))


def _electrode_matrix() -> np.ndarray:
    """``12 x 9``: leads from electrode potentials RA, LA, LL, C1..C6 (Wilson terminal)."""
    m = np.zeros((NUM_LEADS, 9))
    ra, la, ll = np.eye(9)[:3]
    m[:6] = [la - ra, ll - ra, ll - la, ra - (la + ll) / 2, la - (ra + ll) / 2, ll - (ra + la) / 2]
    m[6:, 3:] = np.eye(6)
    m[6:, :3] = -1.0 / 3.0
    return m


_LEAD = _lead_matrix()
_ELECTRODE = _electrode_matrix()
assert len(LEADS) == _LEAD.shape[0] == _ELECTRODE.shape[0]


# --------------------------------------------------------------------------------------------
# Beat templates: Gaussian waves on the heart vector.

class _Waves(NamedTuple):
    """K Gaussian waves of one beat part, timed from an anchor (QRS onset, or P onset for P)."""

    at: np.ndarray     # (K,) centre, s after the anchor
    qt: np.ndarray     # (K,) fraction of the beat's QT added to ``at`` (1 for T waves)
    width: np.ndarray  # (K,) Gaussian sigma, s
    vec: np.ndarray    # (K, 3) heart-vector amplitude, mV

    @staticmethod
    def of(rows: Sequence[tuple[float, float, float, np.ndarray]]) -> _Waves:
        if not rows:
            return _Waves(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 3)))
        at, qt, width, vec = zip(*rows)
        return _Waves(np.array(at), np.array(qt), np.array(width), np.array(vec))

    def __add__(self, other: _Waves) -> _Waves:  # type: ignore[override]
        return _Waves(*(np.concatenate([a, b]) for a, b in zip(self, other)))

    def scaled(self, k: float) -> _Waves:
        return self._replace(vec=self.vec * k)

    @property
    def end(self) -> float:
        """Where the last (non-QT) wave has died away: the J point for a QRS."""
        return float(np.max(self.at + 2.5 * self.width))


class _Beat(NamedTuple):
    """Ventricular part of one beat kind: QRS + ST-T, and its QT lengthening."""

    qrs: _Waves
    st_t: _Waves
    qt_extra: float


def _t_waves(direction: np.ndarray, amp: float) -> _Waves:
    """Asymmetric T (slow rise, faster fall), peaking 75 ms before the beat's QT ends."""
    return _Waves.of([(-0.110, 1.0, 0.045, 0.45 * amp * direction),
                      (-0.075, 1.0, 0.030, 0.60 * amp * direction)])


def _st_waves(j: float, vec: np.ndarray, slope: float = 0.0) -> _Waves:
    """A shift of ``vec`` from the J point into the T wave (three overlapping Gaussians):
    ``slope`` 0 is a plateau, > 0 makes it fade (downsloping depression, upsloping elevation)."""
    return _Waves.of([(j + d, 0.0, 0.025, vec * a * (1 - slope * k) / 1.5) for k, (d, a) in
                      enumerate(((0.02, 1.0), (0.06, 1.0), (0.10, 0.85)))])


#: QRS duration ranges (s) per conduction, and the span of each template at ``w = 1`` (first
#: wave's centre minus 2.5 sigma to the last wave's centre plus 2.5 sigma).
QRS_RANGE = {"normal": (0.07, 0.10), "LBBB": (0.12, 0.165), "RBBB": (0.12, 0.15),
             "PVC": (0.12, 0.17)}


def _qrs(conduction: str, w: float) -> _Waves:
    """QRS for normal, LBBB or RBBB conduction; ``w`` scales its duration."""
    q = (0.012 * w, 0.0, 0.006 * w, 0.20 * _unit(-0.55, 0.25, 0.8))      # septum, left to right
    r1 = (0.032 * w, 0.0, 0.009 * w, 0.85 * _unit(0.5, 0.55, 0.65))      # apex, anterior
    r2 = (0.046 * w, 0.0, 0.010 * w, 1.35 * _unit(0.8, 0.2, -0.6))       # left free wall
    s = (0.066 * w, 0.0, 0.008 * w, 0.40 * _unit(-0.35, -0.55, -0.75))   # base
    if conduction == "LBBB":
        # Septum activated from the right: no septal q, then slow leftward-posterior spread with a
        # notch (broad notched R in I, aVL, V5-V6; QS in V1-V2). Starts at the QRS onset.
        return _Waves.of([
            (0.030 * w, 0.0, 0.012 * w, 0.55 * _unit(0.7, 0.2, -0.3)),
            (0.068 * w, 0.0, 0.017 * w, 1.40 * _unit(0.9, 0.15, -0.5)),
            (0.110 * w, 0.0, 0.017 * w, 1.30 * _unit(0.85, -0.05, -0.55)),
        ])
    if conduction == "RBBB":
        # Normal left-ventricular start, then late slow right-ventricular activation pointing
        # right and anterior: R' in V1-V2, wide slurred S in I, V5-V6. The basal S keeps the
        # loop turning (right, then anterior) instead of collapsing through zero.
        late = (0.100 * w, 0.0, 0.018 * w, 0.95 * _unit(-0.7, -0.15, 0.7))
        return _Waves.of([q, r1, r2, s, late])
    return _Waves.of([q, r1, r2, s])


def _template_span(conduction: str) -> float:
    waves = _qrs(conduction, 1.0)
    return float(np.max(waves.at + 2.5 * waves.width) - np.min(waves.at - 2.5 * waves.width))


def _meets_criteria(conduction: str, lead: np.ndarray, qrs: _Waves) -> bool:
    """Whether a QRS seen through ``lead`` shows its block's diagnostic signs: LBBB a QS (or rS)
    in V1 and a broad R without q in I and V6; RBBB an R' in V1 and a wide S in I and V6 (in the
    last third of the QRS)."""
    if conduction == "normal":
        return True
    fs = 1000.0
    start = float(np.min(qrs.at - 2.5 * qrs.width))
    at = qrs.at - start
    n = int(np.ceil(float(np.max(at + 2.5 * qrs.width)) * fs))
    x = _project(lead, _render(at, qrs.width, qrs.vec, fs, n))
    v1, v6, i = (x[LEADS.index(name)] for name in ("V1", "V6", "I"))
    if conduction == "LBBB":
        return bool(-v1.min() > 3 * max(v1.max(), 0.02)
                    and all(v.max() > 3 * max(-v.min(), 0.02) for v in (i, v6)))
    late = slice(2 * n // 3, None)
    return bool(v1[late].max() > max(0.1, -v1[late].min())
                and i[late].min() < -0.05 and v6[late].min() < -0.05)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size=None):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size=size))


class _Heart:
    """One record's anatomy: lead projection, wave shapes, amplitudes and timings."""

    def __init__(self, rng: np.random.Generator, labels: set[str]):
        self._rng = rng
        # QRS size: low voltage to high voltage (body habitus, hypertrophy).
        amp = float(np.clip(rng.lognormal(np.log(0.9), 0.3), 0.35, 2.2))
        conduction = "LBBB" if "LBBB" in labels else "RBBB" if "RBBB" in labels else "normal"
        lo, hi = QRS_RANGE[conduction]
        w = rng.uniform(lo, hi) / _template_span(conduction)
        # A subject's geometry and QRS; for a bundle branch block, drawn again until the QRS meets
        # the block's diagnostic criteria in this subject's leads (as a cardiologist's label does).
        for _ in range(100):
            self.lead = subject_lead_matrix(rng)
            qrs = self._vary(_qrs(conduction, w)).scaled(amp)
            if _meets_criteria(conduction, self.lead, qrs):
                break
        qrs_axis = qrs.vec.sum(0)
        # T roughly along the QRS (concordant) in normal conduction, opposite to the late QRS
        # forces (discordant) in bundle branch block.
        if conduction == "normal":
            t_dir = _unit(*(_unit(0.65, 0.6, 0.25) + 0.5 * _unit(*qrs_axis)))
        elif conduction == "RBBB":
            t_dir = _unit(*(-_unit(-0.7, -0.15, 0.7) + 0.8 * _unit(0.65, 0.6, 0.25)))
        else:
            t_dir = _unit(-0.7, -0.1, 0.65)
        t_amp = rng.uniform(0.15, 0.55) * (1.3 if conduction == "LBBB" else 1.0)
        st_t = self._vary(_t_waves(t_dir, t_amp))
        if conduction == "LBBB":  # discordant ST in LBBB
            st_t += self._vary(_st_waves(qrs.end, rng.uniform(0.08, 0.16) * t_dir))
        elif not {"STE", "STD"} & labels:
            # Normal J-point elevation in V2-V3 (anterior), under 0.1 mV: not an STE.
            st_t += _st_waves(qrs.end, self._scaled_to_leads(_unit(-0.1, 0.0, 1.0),
                                                             rng.uniform(0.0, 0.07)))
        st_t += self._injury(rng, labels, qrs.end)
        self.conducted = _Beat(qrs, st_t, qrs.end - 0.09)

        self.p = self._vary(_Waves.of([
            (0.035, 0.0, 0.014, 0.12 * _unit(0.3, 0.8, 0.5)),     # right atrium
            (0.060, 0.0, 0.016, 0.11 * _unit(0.8, 0.45, -0.45)),  # left atrium
        ])).scaled(rng.uniform(0.6, 1.5))
        self.pr = rng.uniform(0.21, 0.40) if "I-AVB" in labels else rng.uniform(0.12, 0.20)
        self.qtc = rng.uniform(0.37, 0.45)

        # Ectopic atrial focus: a P pointing away from the sinus P (inverted in some leads).
        sinus_p = self.p.vec.sum(0)
        focus = _unit(*rng.normal(size=3))
        focus = focus - 1.2 * max(focus @ sinus_p / (sinus_p @ sinus_p), 0.0) * sinus_p
        self.p_ectopic = _Waves.of([(0.05, 0.0, rng.uniform(0.018, 0.024),
                                     rng.uniform(0.1, 0.16) * _unit(*focus))])
        # Ventricular focus: wide bizarre QRS of random axis, T opposite to it.
        d1 = _unit(*rng.normal(size=3))
        d2 = _unit(*(d1 + 0.6 * rng.normal(size=3)))
        pvc_amp = amp * rng.uniform(1.3, 2.2)  # ectopic beats are larger than sinus ones
        lo, hi = QRS_RANGE["PVC"]
        wp = rng.uniform(lo, hi) / 0.155  # the template spans 0 to 0.155 s
        pvc_qrs = _Waves.of([(0.050 * wp, 0.0, 0.020 * wp, 0.7 * pvc_amp * d1),
                             (0.100 * wp, 0.0, 0.022 * wp, pvc_amp * d2)])
        self.pvc = _Beat(pvc_qrs, _t_waves(-_unit(*(d1 + d2)), rng.uniform(0.35, 0.7)),
                         pvc_qrs.end - 0.095)
        self.coupling = {_PAC: rng.uniform(0.6, 0.85), _PVC: rng.uniform(0.5, 0.8)}

    def _vary(self, waves: _Waves) -> _Waves:
        """Per-record jitter of each wave's direction and size."""
        n = len(waves.at)
        size = np.linalg.norm(waves.vec, axis=1, keepdims=True)
        vec = waves.vec + 0.15 * size * self._rng.normal(size=(n, 3))
        vec *= self._rng.uniform(0.8, 1.2, size=(n, 1))
        return waves._replace(vec=vec)

    def _injury(self, rng: np.random.Generator, labels: set[str], j: float) -> _Waves:
        """ST shift for STD/STE: a current of injury toward (STE) or away from (STD) a territory;
        the leads opposite the territory show the reciprocal change."""
        territories = {  # heart-vector direction of each wall
            "inferior": _unit(0.05, 1.0, 0.1), "anterior": _unit(-0.1, 0.0, 1.0),
            "lateral": _unit(0.9, -0.3, 0.3), "subendocardial": _unit(0.6, 0.55, 0.5),
            "anterolateral": _unit(0.6, -0.1, 0.8),
        }
        waves = _Waves.of([])
        ste = None
        if "STE" in labels:
            ste = territories[rng.choice(["inferior", "anterior", "lateral", "anterolateral"])]
            ste = _unit(*(ste + 0.15 * rng.normal(size=3)))
            waves += _st_waves(j, self._scaled_to_leads(ste, rng.uniform(0.12, 0.4)),
                               slope=rng.uniform(-0.2, 0.3))
        if "STD" in labels:
            # Depression in the leads that face the wall; with STE, never just its mirror image.
            names = [k for k in ("subendocardial", "anterior", "inferior", "lateral",
                                 "anterolateral") if ste is None or territories[k] @ ste < 0.3]
            d = _unit(*(territories[rng.choice(names)] + 0.15 * rng.normal(size=3)))
            # Horizontal, downsloping (deepening) or upsloping (recovering) depression.
            mv = rng.uniform(0.12, 0.3)
            waves += _st_waves(j, -self._scaled_to_leads(d, mv), slope=rng.uniform(-0.3, 0.1))
            if rng.random() < 0.4:  # with T inversion in the same leads (ST-T change)
                waves += _t_waves(-d, rng.uniform(0.1, 0.3))
        return waves

    def _scaled_to_leads(self, direction: np.ndarray, mv: float) -> np.ndarray:
        """``direction`` scaled so that the lead it shows most in moves by ``mv``."""
        return direction * mv / np.max(self.lead @ direction)


# --------------------------------------------------------------------------------------------
# Rhythm.

class _Rhythm(NamedTuple):
    onset: np.ndarray  # (B,) QRS onsets, s (some before 0 or after the end: they draw into it)
    kind: np.ndarray   # (B,) _SINUS, _PAC or _PVC
    rr: np.ndarray     # (B,) interval from the previous onset, s


#: AF: coefficient of variation of the RR intervals.
AF_RR_CV = (0.15, 0.35)


def _rhythm(rng: np.random.Generator, heart: _Heart, labels: set[str], duration: float) -> _Rhythm:
    """Beat times: sinus (with respiratory arrhythmia) or AF, with PAC/PVC interleaved."""
    af = "AF" in labels
    hr = (rng.uniform(60, 140) if af else rng.uniform(55, 100) if "Normal" in labels
          else rng.uniform(48, 95) if "I-AVB" in labels else rng.uniform(48, 115))
    rr0 = 60.0 / hr
    cv = rng.uniform(*AF_RR_CV)
    af_sd = np.sqrt(np.log1p(cv**2))  # log-normal RR with that coefficient of variation
    resp_f, resp_a, resp_ph = rng.uniform(0.15, 0.35), rng.uniform(0.01, 0.04), rng.uniform(0, 7)
    ectopic = {k: rng.uniform(0.08, 0.3) for k, name in ((_PAC, "PAC"), (_PVC, "PVC"))
               if name in labels}
    last = dict.fromkeys(ectopic, 0.0)  # the record start counts as an ectopic beat

    def next_rr(t: float) -> float:
        if af:
            return float(np.clip(rr0 * np.exp(af_sd * rng.normal() - af_sd**2 / 2), 0.28, 2.2))
        return rr0 * (1 + resp_a * np.sin(2 * np.pi * resp_f * t + resp_ph) + 0.01 * rng.normal())

    t = -rng.uniform(1.0, 1.0 + rr0)
    onsets, kinds = [t], [_SINUS]
    pending = None  # after a PVC in sinus rhythm: when the next sinus beat is due
    while t < duration + 0.6:
        rr = next_rr(t)
        due = [k for k in ectopic if t + rr - last[k] > _MAX_ECTOPIC_GAP_S]
        wanted = due or ([k for k, p in ectopic.items() if rng.random() < p]
                         if kinds[-1] == _SINUS else [])
        if wanted:
            kind = min(wanted, key=last.__getitem__)  # the longest-waiting class first
            nxt = t + rr * float(np.clip(heart.coupling[kind] + rng.uniform(-0.03, 0.03),
                                         *((0.6, 0.85) if kind == _PAC else (0.5, 0.8))))
            last[kind] = nxt
            # Full compensatory pause after a PVC: the sinus node was not reset. After a PAC the
            # sinus node restarts from the ectopic beat (non-compensatory pause).
            pending = t + 2 * rr if kind == _PVC and not af else None
        else:
            kind = _SINUS
            nxt = pending if pending is not None else t + rr
            pending = None
        onsets.append(nxt)
        kinds.append(kind)
        t = nxt
    onset = np.array(onsets)
    rr = np.diff(onset, prepend=onset[0] - rr0)
    return _Rhythm(onset, np.array(kinds), rr)


# --------------------------------------------------------------------------------------------
# Rendering.

def _place(waves: _Waves, anchor: np.ndarray, qt: np.ndarray, jitter: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (B*K,), widths (B*K,), vectors (B*K, 3) of ``waves`` at B anchors (s)."""
    at = anchor[:, None] + waves.at[None] + waves.qt[None] * qt[:, None]
    width = np.broadcast_to(waves.width, at.shape)
    vec = waves.vec[None] * jitter[:, None, None]
    return at.ravel(), width.ravel(), vec.reshape(-1, 3)


def _render(at: np.ndarray, width: np.ndarray, vec: np.ndarray, fs: float, n: int) -> np.ndarray:
    """Heart vector ``3 x n``: the sum of Gaussians centred at ``at`` s, sigma ``width`` s.

    Each Gaussian is evaluated only within 4 sigma of its centre (a ragged set of windows).
    """
    c, s = at * fs, width * fs
    half = np.ceil(4 * s).astype(np.int64)
    size = 2 * half + 1
    first = np.rint(c).astype(np.int64) - half
    which = np.repeat(np.arange(len(c)), size)
    idx = first[which] + np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
    g = np.exp(-0.5 * ((idx - c[which]) / s[which]) ** 2)
    keep = (idx >= 0) & (idx < n)
    idx, g, which = idx[keep], g[keep], which[keep]
    return np.stack([np.bincount(idx, weights=g * vec[which, d], minlength=n) for d in range(3)])


#: AF f-waves: frequency band (Hz) and RMS size in V1 (mV).
F_WAVE_HZ = (4.0, 9.0)
F_WAVE_RMS_MV = (0.015, 0.07)


def _f_lead_weights(rng: np.random.Generator, lead: np.ndarray) -> np.ndarray:
    """(12,) size of f-waves per lead relative to V1: the atria lie right, inferior and anterior,
    so the limb leads see a rightward-inferior dipole (I and II through the subject's projection,
    the others derived from them) at most 0.6 of V1, and the precordial leads fade with distance
    from V1."""
    limb = lead[RECORDED[:2]] @ _unit(-0.4, 0.8, 0.4)
    limb = 0.6 * rng.uniform(0.5, 1.0) * limb / max(np.abs(limb).max(), 1e-6)
    chest = np.array([1.0, 0.6, 0.4, 0.3, 0.2, 0.15]) * rng.uniform(0.8, 1.0, size=6)
    chest[0] = 1.0
    return derive_leads(np.concatenate([limb, chest]))


def _slow_wobble(rng: np.random.Generator, t: np.ndarray, k: int = 3) -> np.ndarray:
    """Sum of ``k`` random sinusoids of 0.05-1 Hz, scaled to about unit amplitude."""
    f = rng.uniform(0.05, 1.0, size=(k, 1))
    return np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, size=(k, 1))).sum(0) / np.sqrt(k)


def _f_waves(rng: np.random.Generator, t: np.ndarray, fs: float, lead: np.ndarray) -> np.ndarray:
    """Fibrillatory waves ``12 x n`` (mV): 4-9 Hz, wandering in rate and size, with an RMS of
    15-70 uV in V1, where they are largest."""
    freq = np.clip(rng.uniform(4.5, 8.0) + 0.8 * _slow_wobble(rng, t), *F_WAVE_HZ)
    phase = 2 * np.pi * np.cumsum(freq) / fs
    envelope = np.clip(1 + 0.3 * _slow_wobble(rng, t), 0.3, None)
    wave = envelope * (np.sin(phase) + 0.3 * np.sin(2 * phase + rng.uniform(0, 2 * np.pi)))
    wave *= _log_uniform(rng, *F_WAVE_RMS_MV) / np.sqrt(np.mean(wave**2))
    return np.outer(_f_lead_weights(rng, lead), wave)


@functools.lru_cache(maxsize=512)
def _butter(order: int, cutoff: float | tuple[float, float], btype: str, fs: float) -> np.ndarray:
    """Butterworth second-order sections (cached: designing one costs more than filtering)."""
    from scipy.signal import butter

    return butter(order, cutoff, btype=btype, fs=fs, output="sos")


#: Band-limiting of the recording: low-pass corners (Hz) and high-pass corners (Hz) drawn from.
_LOWPASS_HZ = (35.0, 40.0, 45.0, 50.0, 60.0, 75.0, 100.0, 150.0)
_HIGHPASS_HZ = (0.05, 0.1, 0.15, 0.25, 0.32, 0.5, 0.67)


def _electrode_noise(rng: np.random.Generator, t: np.ndarray, fs: float) -> np.ndarray:
    """Per-electrode (RA, LA, LL, C1..C6) baseline wander, muscle noise with bursts, amplifier
    noise, 50/60 Hz mains and electrode-motion bursts, as ``9 x n`` (mV)."""
    n = len(t)
    # Baseline wander: two breathing-rate and three slower drift sinusoids shared by all
    # electrodes, each electrode with its own sizes and phases
    # (a sin(wt + p) = a cos(p) sin(wt) + a sin(p) cos(wt)).
    freqs = np.concatenate([rng.uniform(0.1, 0.5, 2), rng.uniform(0.02, 0.1, 3)])
    wt = 2 * np.pi * freqs[:, None] * t
    basis = np.concatenate([np.sin(wt), np.cos(wt)])
    amps = np.concatenate([_log_uniform(rng, 0.003, 0.15) * rng.uniform(0, 1, size=(9, 2)),
                           _log_uniform(rng, 0.003, 0.1) * rng.uniform(0, 1, size=(9, 3))], 1)
    phases = rng.uniform(0, 2 * np.pi, size=(9, 5))
    e = _project(np.concatenate([amps * np.cos(phases), amps * np.sin(phases)], 1), basis)
    # Muscle noise: high-frequency (differenced white noise), in bursts on some electrodes; and
    # white amplifier noise.
    emg = np.diff(rng.standard_normal((9, n + 1), np.float32), axis=1) / np.sqrt(2.0)
    level = _log_uniform(rng, 0.001, 0.04) * rng.uniform(0.2, 1.0, size=(9, 1))
    if rng.random() < 0.4:  # bursts: contraction of the limb or chest muscles
        burst = np.zeros(n)
        for _ in range(rng.integers(1, 4)):
            c, w = rng.uniform(0, t[-1]), rng.uniform(0.3, 2.0)
            burst += rng.uniform(2, 6) * np.exp(-0.5 * ((t - c) / (w / 3)) ** 2)
        level = level * (1 + burst)
    e += level * emg
    e += rng.uniform(0.002, 0.01) * rng.standard_normal((9, n), np.float32)
    if rng.random() < 0.35:  # mains interference
        f = 50.0 if rng.random() < 0.7 else 60.0
        hum = _log_uniform(rng, 0.003, 0.05) * rng.uniform(0.3, 1.0, size=(9, 1))
        e += hum * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.3:  # electrode motion: slow large swings on one electrode
        for _ in range(rng.integers(1, 4)):
            k, c, w = rng.integers(9), rng.uniform(0, t[-1]), rng.uniform(0.2, 1.5)
            window = np.exp(-0.5 * ((t - c) / (w / 3)) ** 2)
            swing = np.sin(2 * np.pi * rng.uniform(0.5, 4.0) * t + rng.uniform(0, 2 * np.pi))
            e[k] += rng.uniform(0.1, 1.0) * window * swing
    return e


def _recording(rng: np.random.Generator, recorded: np.ndarray, fs: float) -> np.ndarray:
    """The machine's channels I, II, V1..V6 (``8 x n``): band-limiting, then sometimes a lead-off
    or saturated segment."""
    from scipy.signal import sosfiltfilt

    n = recorded.shape[1]
    if rng.random() < 0.7:
        corner = min(float(rng.choice(_LOWPASS_HZ)), 0.45 * fs)
        recorded = sosfiltfilt(_butter(int(rng.integers(1, 4)), corner, "lowpass", float(fs)),
                               recorded, axis=1)
    if rng.random() < 0.5:
        corner = float(rng.choice(_HIGHPASS_HZ))
        recorded = sosfiltfilt(_butter(1, corner, "highpass", float(fs)), recorded, axis=1)
    recorded = np.array(recorded)
    if rng.random() < 0.05:  # lead-off: a flat channel for a while (or the whole record)
        c = rng.integers(len(recorded))
        a = int(rng.integers(0, n)) if rng.random() < 0.6 else 0
        b = int(min(n, a + rng.uniform(0.5, 8.0) * fs)) if a else n
        recorded[c, a:b] = rng.uniform(-0.05, 0.05) + 0.003 * rng.standard_normal(b - a)
    if rng.random() < 0.05:  # saturation: a channel at its rail after a large artefact
        c = rng.integers(len(recorded))
        a = int(rng.integers(0, n))
        b = int(min(n, a + rng.uniform(0.1, 2.0) * fs))
        recorded[c, a:b] = rng.choice([-1.0, 1.0]) * rng.uniform(1.5, 5.0)
    return recorded


def _noise(rng: np.random.Generator, signal: np.ndarray, t: np.ndarray, fs: float) -> np.ndarray:
    """``signal`` (``12 x n``) as recorded: electrode noise combined into the leads the way an
    ECG machine combines them, and recording artefacts on the channels it records."""
    x = signal + _project(_ELECTRODE, _electrode_noise(rng, t, fs))
    return derive_leads(_recording(rng, x[RECORDED], fs))


def _project(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``matrix @ x`` for a small matrix; einsum avoids BLAS threads, which cost more than they
    save on such shapes (and fight over a busy machine's cores)."""
    return np.einsum("lk,kn->ln", matrix, x)


class _Spans(NamedTuple):
    """Per-beat sample intervals used to write the evidence."""

    beats: np.ndarray  # kind of each beat
    p_on: np.ndarray
    qrs_on: np.ndarray
    j: np.ndarray
    t_peak: np.ndarray
    t_end: np.ndarray


def _draw(rng: np.random.Generator, heart: _Heart, rhythm: _Rhythm, labels: set[str], fs: float,
          n: int) -> tuple[np.ndarray, _Spans]:
    """Noise-free cardiac signal ``12 x n`` (mV) and the per-beat fiducials (s)."""
    onset, kind, rr = rhythm
    qt = heart.qtc * np.sqrt(np.clip(rr, 0.3, 2.0))
    jitter = 1.0 + 0.03 * rng.normal(size=len(onset))
    pr = heart.pr + 0.005 * rng.normal(size=len(onset)) + np.where(kind == _PAC, 0.02, 0.0)
    p_on = np.where(kind == _PVC, np.nan, onset - pr)
    j = np.empty_like(onset)
    t_end = np.empty_like(onset)
    parts = []
    for beat, sel in ((heart.conducted, kind != _PVC), (heart.pvc, kind == _PVC)):
        q = qt[sel] + beat.qt_extra
        parts.append(_place(beat.qrs + beat.st_t, onset[sel], q, jitter[sel]))
        j[sel] = onset[sel] + beat.qrs.end
        t_end[sel] = onset[sel] + q
    has_p = (kind == _PAC) | ((kind == _SINUS) & ("AF" not in labels))
    for p, sel in ((heart.p, has_p & (kind == _SINUS)), (heart.p_ectopic, kind == _PAC)):
        parts.append(_place(p, p_on[sel], np.zeros(sel.sum()), jitter[sel]))
    at, width, vec = (np.concatenate(x) for x in zip(*parts))
    signal = _project(heart.lead, _render(at, width, vec, fs, n))
    p_on[~has_p] = np.nan
    return signal, _Spans(kind, p_on, onset, j, t_end - 0.075, t_end)


def _evidence(labels: set[str], spans: _Spans, fs: float, n: int) -> list[tuple[str, int, int]]:
    """``(label, start, end)`` sample intervals, clipped to ``[0, n)``, sorted by start."""
    conducted = spans.beats != _PVC
    with_p = conducted & ~np.isnan(spans.p_on)
    s = spans
    where = {
        "AF": (np.array([0.0]), np.array([n / fs])),
        "Normal": (np.array([0.0]), np.array([n / fs])),
        "I-AVB": (s.p_on[with_p], s.qrs_on[with_p]),
        "LBBB": (s.qrs_on[conducted], s.j[conducted]),
        "RBBB": (s.qrs_on[conducted], s.j[conducted]),
        "STD": (s.j[conducted], s.t_peak[conducted]),
        "STE": (s.j[conducted], s.t_peak[conducted]),
        "PAC": (s.p_on[s.beats == _PAC], s.t_end[s.beats == _PAC]),
        "PVC": (s.qrs_on[s.beats == _PVC], s.t_end[s.beats == _PVC]),
    }
    out = []
    for label in labels:
        a, b = where[label]
        a = np.clip(np.rint(a * fs), 0, n).astype(int)
        b = np.clip(np.rint(b * fs), 0, n).astype(int)
        out += [(label, int(x), int(y)) for x, y in zip(a, b) if y > x]
    return sorted(out, key=lambda e: (e[1], e[2], e[0]))


# --------------------------------------------------------------------------------------------
# Public API.

def sample_labels(rng: np.random.Generator, balanced: bool = False) -> list[str]:
    """A CPSC-like label set (class names in canonical order).

    Default: drawn with CPSC 2018's own label-set frequencies (about 7% multilabel, mostly pairs
    such as AF+RBBB). ``balanced``: a class drawn uniformly, then a CPSC label set containing it.
    """
    if balanced:
        cls = CLASSES[rng.integers(len(CLASSES))]
        idx = [i for i, s in enumerate(_SETS) if cls in s]
        p = _SET_P[idx] / _SET_P[idx].sum()
        chosen = _SETS[idx[rng.choice(len(idx), p=p)]]
    else:
        chosen = _SETS[rng.choice(len(_SETS), p=_SET_P)]
    return [c for c in CLASSES if c in chosen]


def sample_duration(rng: np.random.Generator, durations: tuple[float, float] | None = None
                    ) -> float:
    """Record length in seconds: CPSC-like (6-60 s, a third exactly 10 s, median about 12 s), or
    uniform in ``durations = (min_s, max_s)``."""
    if durations is not None:
        lo, hi = durations
        return float(lo if hi <= lo else rng.uniform(lo, hi))
    u = rng.random()
    if u < 0.33:
        return 10.0
    if u < 0.8:
        return float(np.clip(rng.lognormal(np.log(13.0), 0.22), 6.0, 20.0))
    return float(np.exp(rng.uniform(np.log(15.0), np.log(60.0))))


def check_labels(labels: Sequence[str]) -> set[str]:
    """The label set, or ValueError if it is empty, unknown or cannot be simulated."""
    found = set(labels)
    unknown = found - set(CLASSES)
    if unknown or not found:
        raise ValueError(f"synthetic labels must be a non-empty subset of {CLASSES}, "
                         f"got {list(labels)}")
    if "Normal" in found and len(found) > 1:
        raise ValueError(f"Normal cannot be combined with other labels: {sorted(found)}")
    for pair in _EXCLUSIVE:
        if pair <= found:
            raise ValueError(f"the synthetic generator cannot combine {sorted(pair)}")
    return found


def synth_record(seed: int, index: int, labels: Sequence[str] | None = None, fs: float = 500.0,
                 duration_s: float | None = None, durations: tuple[float, float] | None = None,
                 balanced: bool = False, noise: bool = True) -> Record:
    """Synthetic record ``S{index:06d}``: signal ``12 x N`` float32 mV, labels and evidence.

    ``labels`` default to :func:`sample_labels`; ``duration_s`` fixes the length, else it is drawn
    by :func:`sample_duration` (``durations`` narrows it). ``noise=False`` leaves out the nuisance
    (baseline wander, muscle and electrode noise, mains, motion, band-limiting, lead-off and
    saturation); the cardiac signal is the same either way. The content
    depends only on ``(seed, index)`` and these options.
    """
    rng_labels, rng_heart, rng_noise = np.random.default_rng([seed, index]).spawn(3)
    names = sample_labels(rng_labels, balanced) if labels is None else list(labels)
    found = check_labels(names)
    duration = sample_duration(rng_labels, durations) if duration_s is None else float(duration_s)
    n = int(round(duration * fs))
    if duration < 2.0:
        raise ValueError(f"synthetic records must last at least 2 s, asked for {duration:g} s")
    t = np.arange(n) / fs

    heart = _Heart(rng_heart, found)
    rhythm = _rhythm(rng_heart, heart, found, duration)
    signal, spans = _draw(rng_heart, heart, rhythm, found, fs, n)
    if "AF" in found:
        signal += _f_waves(rng_heart, t, fs, heart.lead)
    # Breathing moves the heart: a slow swing in amplitude.
    signal *= 1 + rng_heart.uniform(0, 0.08) * np.sin(2 * np.pi * rng_heart.uniform(0.15, 0.4) * t
                                                      + rng_heart.uniform(0, 7))
    if noise:
        signal = _noise(rng_noise, signal, t, fs)
    return Record(id=f"S{index:06d}", signal=signal.astype(np.float32), fs=float(fs),
                  labels=multi_hot(found), source="synthetic",
                  evidence=_evidence(found, spans, fs, n))


def fingerprint(n: int, seed: int, fs: float, durations: tuple[float, float] | None,
                balanced: bool) -> str:
    """The store fingerprint of a synthetic data set: generator version plus every option."""
    dur = "cpsc" if durations is None else f"{durations[0]:g}-{durations[1]:g}"
    return (f"synthetic v{GENERATOR_VERSION} n={n} seed={seed} fs={fs:g} durations={dur} "
            f"balanced={bool(balanced)}")


def make_synthetic_store(out: str | os.PathLike, n: int = 2000, seed: int = 0, fs: float = 500.0,
                         durations: tuple[float, float] | None = None, balanced: bool = False,
                         progress: bool = True, force: bool = False) -> Path:
    """Write ``n`` synthetic records to the store ``out`` (reused if made with the same options).

    Prints a short summary (records, per-class counts, multilabel, median duration).
    """
    out = Path(out)
    fp = fingerprint(n, seed, fs, durations, balanced)
    if not force and is_current(out, fp):
        print(f"{out}: synthetic store is current ({fp}); reusing it")
        return out
    if not is_store(out) and out.exists() and any(out.iterdir()):
        raise StoreError(f"{out}: exists and is not an xecg store; will not overwrite it")
    from tqdm.auto import tqdm

    meta = {"generator": {"name": "xecg.data.synthetic", "version": GENERATOR_VERSION, "n": n,
                          "seed": seed, "durations": durations, "balanced": bool(balanced)}}
    with StoreWriter(out, fs, source="synthetic", fingerprint=fp, extra_meta=meta) as writer:
        for i in tqdm(range(n), desc="synthetic", unit="rec", disable=not progress):
            writer.add(synth_record(seed, i, fs=fs, durations=durations, balanced=balanced))
        summary = writer.summary()
    counts = {k: v for k, v in summary["class_counts"].items() if v}
    print(f"{out}: {summary['records']:,} synthetic records ({fp}); "
          f"multilabel {summary['multilabel']:,}; median {summary['median_length_s']:.1f} s")
    print("  " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return out
