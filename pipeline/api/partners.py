"""Partner exports through the API (pull delivery, docs/exports.md).

* ``GET /partners/{partner_id}/exports``                      periods, files, sizes, hashes
* ``GET /partners/{partner_id}/exports/{period}/{file_name}``  one file (a data file of the
  manifest, or ``manifest.json``)

A ``partner:<id>`` token reads its own partner's *delivered* exports only; any other partner
id answers 404 exactly as an unknown one does (``exports.not_found``), so ids cannot be
probed. A ``finance`` token reads every partner's exports, delivered or not (``status``
says which). A team token gets 403. Errors are ``{"code": "...", "message": "..."}``.
"""

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from pipeline.api.auth import FINANCE, Principal, TokenAuth
from pipeline.domain.errors import ExportError, ExportErrorCode

if TYPE_CHECKING:
    from pipeline.exports.builder import Exporter

log = logging.getLogger("pipeline.api.partners")

HTTP_STATUS: dict[ExportErrorCode, int] = {
    ExportErrorCode.NOT_FOUND: 404,
    ExportErrorCode.NO_WHOLESALE_PRICE: 422,
    ExportErrorCode.PERIOD_NOT_CLOSED: 409,
    ExportErrorCode.DELIVERED_EXPORT_CHANGED: 409,
    ExportErrorCode.DELIVERY_FAILED: 502,
}


class ErrorBody(BaseModel):
    code: str
    message: str


class ExportFile(BaseModel):
    name: str
    format: Literal["csv", "parquet", "manifest"]
    rows: int | None
    bytes: int
    sha256: str
    url: str


class ExportSummary(BaseModel):
    period: str
    status: Literal["delivered", "draft"]
    focus_version: str
    run_id: str
    generated_at: datetime
    delivered_at: datetime | None
    billing_currency: str
    rows: int
    correction_rows: int
    files: list[ExportFile]


class PartnerExports(BaseModel):
    partner_id: str
    exports: list[ExportSummary]


def _not_found(partner_id: str) -> ExportError:
    # the same answer for an unknown partner and for someone else's: ids cannot be probed
    return ExportError(ExportErrorCode.NOT_FOUND, f"no exports for partner {partner_id!r}")


def install(app: FastAPI, auth: TokenAuth) -> None:
    """Add the partner routes and the handler of export errors to ``app`` (whose
    ``state.services`` holds the settings, configuration, ClickHouse ledger and lock)."""
    services = app.state.services
    holder: dict[str, Exporter] = {}

    def exporter() -> "Exporter":
        with services.lock:
            if "e" not in holder:
                from pipeline.adapters.store import Store
                from pipeline.bootstrap import exporter as build

                holder["e"] = build(
                    services.settings,
                    services.config,
                    Store(services.ledger.ex),
                    clock=services.clock,
                    require_key=False,  # reading exports needs no pseudonyms
                )
            return holder["e"]

    @app.exception_handler(ExportError)
    async def export_error(request: Request, exc: ExportError) -> JSONResponse:
        status = HTTP_STATUS.get(exc.code, 500)
        body = ErrorBody(code=exc.code.value, message=exc.message)
        return JSONResponse(body.model_dump(), status_code=status)

    bearer = HTTPBearer(
        auto_error=False, description="A partner:<id> token (its own exports) or finance."
    )

    def reader(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        return auth.require(
            creds.credentials if creds is not None else None,
            (FINANCE, "partner"),
            "partner exports need a partner or finance token",
        )

    def scope(principal: Principal, partner_id: str) -> bool:
        """Whether the caller reads only delivered exports; 404 for a partner it may not
        read or that does not exist."""
        if principal.role == "partner" and principal.subject != partner_id:
            raise _not_found(partner_id)
        if partner_id not in services.config.reference.partners:
            raise _not_found(partner_id)
        return principal.role != FINANCE

    router = APIRouter(
        prefix="/partners",
        tags=["partners"],
        responses={
            c: {"model": ErrorBody, "description": d}
            for c, d in ((401, "no token"), (403, "a team token"), (404, "exports.not_found"))
        },
    )

    @router.get(
        "/{partner_id}/exports",
        response_model=PartnerExports,
        summary="A partner's usage exports (FOCUS 1.2): periods, files, sizes, SHA-256",
    )
    def list_exports(
        partner_id: str, principal: Annotated[Principal, Depends(reader)]
    ) -> PartnerExports:
        delivered_only = scope(principal, partner_id)
        ex = exporter()
        with services.lock:
            found = ex.listing(partner_id, delivered_only)
        out = []
        for doc, delivery in found:
            period = str(doc["period"])
            base = f"/partners/{partner_id}/exports/{period}"
            files = [
                ExportFile(
                    name=f["name"],
                    format=f["format"],
                    rows=f["rows"],
                    bytes=f["bytes"],
                    sha256=f["sha256"],
                    url=f"{base}/{f['name']}",
                )
                for f in doc["files"]
            ]
            manifest = ex.directory(period, partner_id) / "manifest.json"
            files.append(_manifest_entry(manifest, base))
            out.append(
                ExportSummary(
                    period=period,
                    status="delivered" if delivery is not None else "draft",
                    focus_version=doc["focus_version"],
                    run_id=doc["run_id"],
                    generated_at=doc["generated_at"],
                    delivered_at=delivery.delivered_at if delivery else None,
                    billing_currency=doc["billing_currency"],
                    rows=doc["rows"],
                    correction_rows=doc["correction_rows"],
                    files=files,
                )
            )
        return PartnerExports(partner_id=partner_id, exports=out)

    @router.get(
        "/{partner_id}/exports/{period}/{file_name}",
        response_class=FileResponse,
        summary="One file of an export (CSV, Parquet or manifest.json)",
        responses={
            200: {
                "content": {
                    "text/csv": {},
                    "application/vnd.apache.parquet": {},
                    "application/json": {},
                }
            }
        },
    )
    def download(
        partner_id: str,
        period: str,
        file_name: str,
        principal: Annotated[Principal, Depends(reader)],
    ) -> FileResponse:
        delivered_only = scope(principal, partner_id)
        ex = exporter()
        with services.lock:
            path = ex.file(partner_id, period, file_name, delivered_only)
        from pipeline.exports.builder import content_type

        return FileResponse(path, media_type=content_type(file_name), filename=file_name)

    app.include_router(router)


def _manifest_entry(path: Path, base: str) -> ExportFile:
    from pipeline.exports.files import sha256_file

    return ExportFile(
        name="manifest.json",
        format="manifest",
        rows=None,
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
        url=f"{base}/manifest.json",
    )
