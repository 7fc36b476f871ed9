"""Demo partnership on top of the demo master data and pools: Acme Pharma has Contract Pack GmbH pack its EU
amoxicillin, assigns it 5,000 serials, and plans a batch with one packaging order on the CMO's Hamburg line — what the
"cmo" demo user then sees in the portal. Safe to run again: what exists is left as it is."""

from masterdata.models import Company, Location, Product
from partners import services
from partners.models import Partnership, SerialAssignment
from serialization.models import Batch, PackagingOrder
from serialization.services.batches import create_batch, create_packaging_order

MAH, CMO, PRODUCT = "Acme Pharma", "Contract Pack GmbH", "09521234543213"


def load_demo_partners(*, actor) -> list[str]:
    done: list[str] = []
    mah, cmo = Company.objects.filter(name=MAH).first(), Company.objects.filter(name=CMO).first()
    product = Product.objects.filter(product_code=PRODUCT).first()
    line = Location.objects.filter(company=cmo, kind=Location.Kind.LINE).order_by("pk").first() if cmo else None
    if not (mah and cmo and product and line):
        return done
    partnership = Partnership.objects.filter(mah=mah, cmo=cmo).first()
    if partnership is None:
        partnership = services.create_partnership(mah=mah, cmo=cmo, products=[product], actor=actor)
        done.append(f"partnership {partnership}")
    if not SerialAssignment.objects.filter(partnership=partnership, request_id="demo-assign-1").exists():
        services.assign_serials(
            partnership=partnership, product=product, quantity=5_000, actor=actor, request_id="demo-assign-1"
        )
        done.append(f"5,000 serials of {PRODUCT} assigned to {cmo}")
    batch = Batch.objects.filter(product=product, lot="DEMO-CMO-001").first()
    if batch is None:
        batch = create_batch(product=product, lot="DEMO-CMO-001", expiry="281200", actor=actor)
        done.append(f"batch {batch.lot}")
    if not PackagingOrder.objects.filter(number="CMO-PO-2001").exists():
        create_packaging_order(batch=batch, line=line, number="CMO-PO-2001", planned_quantity=1_000, actor=actor)
        done.append(f"packaging order CMO-PO-2001 on {line.name}")
    return done
