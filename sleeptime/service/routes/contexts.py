"""What a tenant can ask about: its contexts, and a context's variants with the policy's default."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sleeptime.service.api_models import ERRORS, ChoiceOut, ContextList, ContextOut, VariantList, VariantOut
from sleeptime.service.auth import Caller
from sleeptime.service.dependencies import Holder, serving_snapshot
from sleeptime.service.errors import problem
from sleeptime.service.selection import Unsatisfiable, select

router = APIRouter(prefix="/v1/contexts", tags=["contexts"], responses=ERRORS)


@router.get("", response_model=ContextList)
def list_contexts(
    caller: Caller,
    holder: Holder,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ContextList:
    """The contexts the caller's tenant owns (every context without auth), by id."""
    snapshot = serving_snapshot(holder)
    ids = snapshot.context_ids(caller.tenant)
    page = []
    for context_id in ids[offset: offset + limit]:
        entry = snapshot.contexts[context_id]
        page.append(ContextOut(
            context_id=context_id, source=entry.context.source, chars=len(entry.context.text),
            sleep_budgets=sorted(entry.variants),
        ))
    return ContextList(tenant=caller.tenant, total=len(ids), offset=offset, limit=limit, contexts=page)


@router.get("/{context_id}/variants", response_model=VariantList)
def list_variants(context_id: str, caller: Caller, holder: Holder) -> VariantList:
    """A context's current c' (sample 0 per sleep budget) and the policy's default choice."""
    snapshot = serving_snapshot(holder)
    entry = snapshot.context_for(caller.tenant, context_id)
    if entry is None:
        raise problem(404, f"unknown context {context_id!r}")
    variants = [
        VariantOut(variant_id=v.id, sleep_budget=v.sleep_budget, sample_index=v.sample_index, model=v.model,
                   completion_tokens=v.usage.completion_tokens, text=v.text)
        for v in sorted(entry.variants.values(), key=lambda v: v.usage.completion_tokens)
    ]
    try:
        selection = select(snapshot, entry, None)
        default = ChoiceOut.of(selection, selection.primary, selection.fallback)
    except Unsatisfiable:
        default = None
    return VariantList(context_id=context_id, variants=variants, default_choice=default)
