"""Writes of the serial engine. Other apps call these (never the models directly)."""

from serialization.services.allocation import allocate_serials, release_serials
from serialization.services.imports import import_serials, start_import
from serialization.services.lookup import SerialStatus, index_in_pool, lookup_serial, lookup_sscc
from serialization.services.partner_pools import partner_pool_counts, return_partner_serials, share_allocation
from serialization.services.pools import (
    block_pool,
    create_generated_pool,
    create_list_pool,
    fill_pool,
    pool_permutation,
)

__all__ = [
    "SerialStatus",
    "allocate_serials",
    "block_pool",
    "create_generated_pool",
    "create_list_pool",
    "fill_pool",
    "import_serials",
    "index_in_pool",
    "lookup_serial",
    "lookup_sscc",
    "partner_pool_counts",
    "pool_permutation",
    "release_serials",
    "return_partner_serials",
    "share_allocation",
    "start_import",
]
