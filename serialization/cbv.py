"""GS1 Core Business Vocabulary (CBV 2.0) terms the back-office writes, and what each line-report step means in them.

EPCIS 2.0's JSON schema accepts any string as bizStep or disposition (a URI is a private extension), so a document
that passes the schema can still carry a misspelt standard term. ``BIZ_STEPS`` and ``DISPOSITIONS`` are the
standard lists, copied from the ``bizStep``/``disposition`` enumerations of ``standards/epcis/EPCIS-JSON-Schema.json``;
every mapping below is checked against them when this module is imported.

EPCIS 1.2 XML (US DSCSA) writes the same terms as URNs: ``urn:epcglobal:cbv:bizstep:commissioning``,
``urn:epcglobal:cbv:disp:active`` (``biz_step_urn``/``disposition_urn``).

Decommissioning reasons (``DECOMMISSION``). The four that DOMAIN.md fixes — destroyed, sample, dispensed, line
reject — are mapped as written there. The others, and the EU hub state of each (the hub knows Active, Supplied,
Destroyed, Exported, Stolen, Sample, Free Sample, Locked, Checked-out, Expired, Recalled, Withdrawn), are choices
made here:

===========  ===============  ==================  ===========  =====================================================
reason       bizStep          disposition         EU state     why
===========  ===============  ==================  ===========  =====================================================
line_reject  decommissioning  inactive            Destroyed    rejected on the line and destroyed there; the hub sees
                                                               it only if the batch data was uploaded already
destroyed    destroying       destroyed           Destroyed    (DOMAIN.md)
sample       sampling         non_sellable_other  Sample       (DOMAIN.md)
free_sample  sampling         non_sellable_other  Free Sample  the same step as a sample; the hub tells them apart
damaged      decommissioning  damaged             Destroyed    FMD Art. 22: a damaged pack is decommissioned as
                                                               destroyed; CBV keeps the cause in the disposition
stolen       decommissioning  stolen              Stolen       CBV has a disposition, not a step, for theft
exported     decommissioning  inactive            Exported     the identifier leaves the EU system; the pack lives on
                                                               outside it, so not ``destroyed``
locked       holding          non_sellable_other  Locked       held for an investigation — ``holding`` as for a
                                                               recall, but not ``recalled``
dispensed    dispensing       dispensed           Supplied     (DOMAIN.md); the hub calls a dispensed pack Supplied
===========  ===============  ==================  ===========  =====================================================

The hub state of a pack that is commissioned, packed, unpacked or shipped stays ``Active``.
"""

from dataclasses import dataclass

# CBV 2.0 standard business steps (EPCIS-JSON-Schema.json, definitions.bizStep).
BIZ_STEPS = frozenset(
    {
        "accepting",
        "arriving",
        "assembling",
        "collecting",
        "commissioning",
        "consigning",
        "creating_class_instance",
        "cycle_counting",
        "decommissioning",
        "departing",
        "destroying",
        "disassembling",
        "dispensing",
        "encoding",
        "entering_exiting",
        "holding",
        "inspecting",
        "installing",
        "killing",
        "loading",
        "other",
        "packing",
        "picking",
        "receiving",
        "removing",
        "repackaging",
        "repairing",
        "replacing",
        "reserving",
        "retail_selling",
        "shipping",
        "staging_outbound",
        "stock_taking",
        "stocking",
        "storing",
        "transporting",
        "unloading",
        "unpacking",
        "void_shipping",
        "sensor_reporting",
        "sampling",
    }
)

# CBV 2.0 standard dispositions (EPCIS-JSON-Schema.json, definitions.disposition).
DISPOSITIONS = frozenset(
    {
        "active",
        "container_closed",
        "damaged",
        "destroyed",
        "dispensed",
        "disposed",
        "encoded",
        "expired",
        "in_progress",
        "in_transit",
        "inactive",
        "no_pedigree_match",
        "non_sellable_other",
        "partially_dispensed",
        "recalled",
        "reserved",
        "retail_sold",
        "returned",
        "sellable_accessible",
        "sellable_not_accessible",
        "stolen",
        "unknown",
        "available",
        "completeness_verified",
        "completeness_inferred",
        "conformant",
        "container_open",
        "mismatch_instance",
        "mismatch_class",
        "mismatch_quantity",
        "needs_replacement",
        "non_conformant",
        "unavailable",
    }
)

# EU hub (EMVS) pack states.
EU_ACTIVE = "Active"
EU_STATES = frozenset(
    {
        EU_ACTIVE,
        "Supplied",
        "Destroyed",
        "Exported",
        "Stolen",
        "Sample",
        "Free Sample",
        "Locked",
        "Checked-out",
        "Expired",
        "Recalled",
        "Withdrawn",
    }
)


@dataclass(frozen=True)
class Step:
    """What one step of a pack's life is in EPCIS terms, and the EU hub state the pack is in after it."""

    biz_step: str
    disposition: str | None
    eu_state: str
    label: str = ""

    @property
    def biz_step_urn(self) -> str:
        return biz_step_urn(self.biz_step)

    @property
    def disposition_urn(self) -> str | None:
        return disposition_urn(self.disposition) if self.disposition else None


# Pack events that are not decommissioning (PackEvent.Action values). Unpacking is an AggregationEvent DELETE;
# CBV gives it no disposition of its own, so none is written.
COMMISSIONED = Step("commissioning", "active", EU_ACTIVE, "Commissioned")
PACKED = Step("packing", "in_progress", EU_ACTIVE, "Packed")
UNPACKED = Step("unpacking", None, EU_ACTIVE, "Unpacked")
SHIPPED = Step("shipping", "in_transit", EU_ACTIVE, "Shipped")
RECALLED = Step("holding", "recalled", "Recalled", "Recalled")  # a batch recall, not a line report

# Decommissioning reasons a line may report (Pack.reason values, at most 20 characters).
DECOMMISSION: dict[str, Step] = {
    "line_reject": Step("decommissioning", "inactive", "Destroyed", "Line reject"),
    "destroyed": Step("destroying", "destroyed", "Destroyed", "Destroyed"),
    "sample": Step("sampling", "non_sellable_other", "Sample", "Sample"),
    "free_sample": Step("sampling", "non_sellable_other", "Free Sample", "Free sample"),
    "damaged": Step("decommissioning", "damaged", "Destroyed", "Damaged"),
    "stolen": Step("decommissioning", "stolen", "Stolen", "Stolen"),
    "exported": Step("decommissioning", "inactive", "Exported", "Exported"),
    "locked": Step("holding", "non_sellable_other", "Locked", "Locked"),
    "dispensed": Step("dispensing", "dispensed", "Supplied", "Dispensed"),
}
DECOMMISSION_REASONS = tuple(DECOMMISSION)


def decommission_step(reason: str) -> Step:
    """The CBV step and EU state for a decommissioning ``reason``; KeyError names the reasons allowed."""
    try:
        return DECOMMISSION[reason]
    except KeyError:
        raise KeyError(f"unknown decommissioning reason {reason!r}; use one of {', '.join(DECOMMISSION)}") from None


# Steps after which the EPC no longer exists in the supply chain: their ObjectEvent is a DELETE (CBV,
# ``decommissioning`` and ``destroying``); every other decommissioning reason leaves the pack in existence (a sample,
# a dispensed or held pack), so its ObjectEvent is an OBSERVE.
DELETING_STEPS = frozenset({"decommissioning", "destroying"})


def object_event_action(step: Step) -> str:
    """The EPCIS ObjectEvent action (ADD is commissioning only) of a decommissioning ``step``."""
    return "DELETE" if step.biz_step in DELETING_STEPS else "OBSERVE"


def is_biz_step(value: str) -> bool:
    return value in BIZ_STEPS


def is_disposition(value: str) -> bool:
    return value in DISPOSITIONS


def biz_step_urn(value: str) -> str:
    """EPCIS 1.2 form of a standard bizStep."""
    if value not in BIZ_STEPS:
        raise ValueError(f"{value!r} is not a CBV business step")
    return f"urn:epcglobal:cbv:bizstep:{value}"


def disposition_urn(value: str) -> str:
    """EPCIS 1.2 form of a standard disposition."""
    if value not in DISPOSITIONS:
        raise ValueError(f"{value!r} is not a CBV disposition")
    return f"urn:epcglobal:cbv:disp:{value}"


def _check_mappings() -> None:
    steps = [COMMISSIONED, PACKED, UNPACKED, SHIPPED, RECALLED, *DECOMMISSION.values()]
    for step in steps:
        if step.biz_step not in BIZ_STEPS:
            raise ValueError(f"{step.label}: {step.biz_step!r} is not a CBV business step")
        if step.disposition is not None and step.disposition not in DISPOSITIONS:
            raise ValueError(f"{step.label}: {step.disposition!r} is not a CBV disposition")
        if step.eu_state not in EU_STATES:
            raise ValueError(f"{step.label}: {step.eu_state!r} is not an EU hub state")
    too_long = [reason for reason in DECOMMISSION if len(reason) > 20]
    if too_long:
        raise ValueError(f"decommissioning reasons longer than Pack.reason allows: {too_long}")


_check_mappings()
