"""Charts drawn on the server as inline SVG: readable without JavaScript, with the numbers on hover (``<title>``) and
for screen readers (``role="img"`` with an ``aria-label`` that says them).

A donut is two arcs on a circle whose circumference is 100 units, so an arc of p percent is a ``stroke-dasharray``
of ``p (100 - p)``: no trigonometry, and the markup stays a few hundred bytes per chart.
"""

from html import escape

from django.utils.safestring import SafeString, mark_safe

RADIUS = 15.915494309189533  # 100 / (2π)
STROKE = 6.5
VIEWBOX = 42
CENTRE = VIEWBOX / 2
# An arc smaller than this is drawn at this size, so one assigned serial in 10⁸ still shows; the text says the truth.
MIN_VISIBLE = 0.8

AVAILABLE_COLOUR = "#2f855a"
ASSIGNED_COLOUR = "#1d4e89"
TRACK_COLOUR = "#e4e7eb"


def percent(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a percentage for people: one decimal, never a 0 % or 100 % that is not exact."""
    if whole <= 0:
        return "0 %"
    value = 100 * part / whole
    if 0 < value < 0.1:
        return "< 0.1 %"
    if 99.9 < value < 100:
        return "> 99.9 %"
    return f"{value:.1f} %".replace(".0 %", " %")


def donut_summary(*, available: int, assigned: int) -> str:
    """The chart's numbers as one sentence (its accessible label and the tooltip of the whole chart)."""
    filled = available + assigned
    if filled <= 0:
        return "No serials yet"
    return (
        f"Available {available:,} ({percent(available, filled)}), assigned {assigned:,} ({percent(assigned, filled)}) "
        f"of {filled:,} serials"
    )


def donut(*, available: int, assigned: int, label: str, size: int = 128) -> SafeString:
    """An SVG donut of Available vs Assigned. ``label`` names what it counts (e.g. the product code).

    Built with f-strings and one escape of the only free text (the label): the pool tab draws 200 of these per
    page, and escaping every number through format_html would cost more than the rest of the page."""
    filled = available + assigned
    title = escape(f"{label}: {donut_summary(available=available, assigned=assigned)}")
    arcs = []
    if filled > 0:
        shares = [100 * available / filled, 100 * assigned / filled]
        shares = [max(share, MIN_VISIBLE) if share > 0 else 0.0 for share in shares]
        scale = 100 / sum(shares)
        start = 25.0  # a dash offset of 25 puts the first arc's start at twelve o'clock
        for share, colour, name, count in (
            (shares[0] * scale, AVAILABLE_COLOUR, "Available", available),
            (shares[1] * scale, ASSIGNED_COLOUR, "Assigned", assigned),
        ):
            if share <= 0:
                continue
            arcs.append(
                f'<circle class="arc arc-{name.lower()}" cx="{CENTRE}" cy="{CENTRE}" r="{RADIUS:.6f}" fill="none" '
                f'stroke="{colour}" stroke-width="{STROKE}" stroke-dasharray="{share:.4f} {100 - share:.4f}" '
                f'stroke-dashoffset="{start:.4f}"><title>{name}: {count:,} of {filled:,} '
                f"({escape(percent(count, filled))})</title></circle>"
            )
            start -= share
    big = escape(percent(available, filled)) if filled > 0 else "—"
    small = "available" if filled > 0 else "no serials"
    return mark_safe(  # noqa: S308 - every value is a number or a constant, and the label is escaped above
        f'<svg class="donut" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {VIEWBOX} {VIEWBOX}" width="{size}" '
        f'height="{size}" role="img" aria-label="{title}"><title>{title}</title>'
        f'<circle class="track" cx="{CENTRE}" cy="{CENTRE}" r="{RADIUS:.6f}" fill="none" stroke="{TRACK_COLOUR}" '
        f'stroke-width="{STROKE}"/>{"".join(arcs)}'
        f'<text x="{CENTRE}" y="{CENTRE}" text-anchor="middle" class="donut-big" aria-hidden="true">{big}</text>'
        f'<text x="{CENTRE}" y="{CENTRE + 5}" text-anchor="middle" class="donut-small" aria-hidden="true">{small}'
        "</text></svg>"
    )


def legend(*, available: int, assigned: int) -> SafeString:
    """The donut's numbers as text beside it: Available, Assigned and Filled, with the chart's colours."""
    rows = "".join(
        f'<dt><span class="swatch {name}" aria-hidden="true"></span>{name.capitalize()}</dt>'
        f'<dd class="count-{name}">{value:,}</dd>'
        for name, value in (("available", available), ("assigned", assigned), ("filled", available + assigned))
    )
    return mark_safe(f'<dl class="legend">{rows}</dl>')  # noqa: S308 - constants and numbers only
