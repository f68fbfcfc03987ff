"""Schemathesis hooks for ClientFlow's API, used by `tests/it/schemathesis.rs`.

The OpenAPI document says everything a single field must be. What it can't say is how fields
relate to each other and to records that exist: a project's client must be a client of the
organization, a task's parent a task of the same project, a task's status the one of the column
it names, a due date not before the start date, an invoice's total within 64 bits, an upload's
bytes of an accepted type. These hooks keep
generated requests consistent in those ways, using the records of the organization the test
seeded (their ids come in `CLIENTFLOW_FUZZ_FIXTURES`), and point requests for one record at a
seeded one so that they reach more than a 404.

Only requests schemathesis generated as valid (positive) are changed, and only into other valid
requests: invalid (negative) ones go out as generated, so every check keeps its expected statuses.
In the stateful phase the path ids come from the document's links (what a POST just created), so
they are left alone there.
"""

import itertools
import json
import os

import schemathesis

FIXTURES = json.loads(os.environ["CLIENTFLOW_FUZZ_FIXTURES"])

# The record each path parameter names: the seeded records the other requests refer to, and
# spares for deletions (the first one succeeds, the rest find nothing).
READ = {
    "client": FIXTURES["client"],
    "project": FIXTURES["project"],
    "task": FIXTURES["task"],
    "comment": FIXTURES["comment"],
    "time_entry": FIXTURES["time_entry"],
    "expense": FIXTURES["expense"],
    "invoice": FIXTURES["invoice"],
    "file": FIXTURES["file"],
    # A person of the organization (the key's creator): whose hours a week are set.
    "user": FIXTURES["member"],
}
DELETE = {
    "client": FIXTURES["spare_client"],
    "project": FIXTURES["spare_project"],
    "task": FIXTURES["spare_task"],
    "time_entry": FIXTURES["spare_time_entry"],
    "expense": FIXTURES["spare_expense"],
    "invoice": FIXTURES["spare_invoice"],
    "file": FIXTURES["spare_file"],
}
I64_MAX = 2**63 - 1


def _given(value):
    """A non-empty string: an id or a date, as opposed to `null` or `""` (none)."""
    return isinstance(value, str) and value != ""


def _ordered(body, first, second, fill_missing):
    """`body[second]` not before `body[first]` (ISO dates compare as strings). With
    `fill_missing`, a date sent alone brings its partner along (`fill_missing(value)`), since
    the record's other date is unknown here."""
    a, b = body.get(first), body.get(second)
    if fill_missing is not None:
        if first in body and second not in body:
            body[second] = fill_missing(a)
        elif second in body and first not in body:
            body[first] = fill_missing(b)
        a, b = body.get(first), body.get(second)
    if _given(a) and _given(b) and b < a:
        body[first], body[second] = b, a


def _lines(body):
    lines = body.get("lines")
    if not isinstance(lines, list):
        return
    subtotal = sum(
        (line["quantity_milli"] * line["unit_price_minor"] + 500) // 1000
        for line in lines
        if isinstance(line, dict)
    )
    # Tax at most doubles the subtotal (10000 basis points), whatever the draft's rate is.
    if subtotal * 2 > I64_MAX:
        for line in lines:
            line["unit_price_minor"] = min(line["unit_price_minor"], 100_000)


def _body(case, method, path):
    body = case.body
    if not isinstance(body, dict):
        return
    if path.startswith("/api/v1/projects"):
        if _given(body.get("client_id")):
            body["client_id"] = FIXTURES["client"]
        # A project's dates may be cleared, so a date sent alone clears the other.
        _ordered(body, "start_date", "due_date", (lambda _: None) if method == "PATCH" else None)
    elif path.startswith("/api/v1/tasks") and "/comments" not in path:
        if "project_id" in body:
            body["project_id"] = FIXTURES["project"]
        if "column_id" in body:
            body["column_id"] = FIXTURES["column"]
            # A task's status is its column's: naming both, name them alike.
            if _given(body.get("status")):
                body["status"] = FIXTURES["column_status"]
        if _given(body.get("parent_id")):
            if (case.path_parameters or {}).get("task") == FIXTURES["parent_task"]:
                # The parent fixture itself (named by a link in the stateful phase) can't be its
                # own parent: it stays where it is.
                del body["parent_id"]
            else:
                body["parent_id"] = FIXTURES["parent_task"]
        if isinstance(body.get("assignees"), list):
            body["assignees"] = [FIXTURES["member"] for _ in body["assignees"]]
    elif path.startswith("/api/v1/time-entries"):
        if "project_id" in body:
            body["project_id"] = FIXTURES["project"]
        if _given(body.get("task_id")):
            body["task_id"] = FIXTURES["task"]
        # Minutes or a duration as people type it, not both; a new entry needs one of them.
        if "duration" in body:
            if "minutes" in body:
                del body["duration"]
            else:
                body["duration"] = "1:30"
        elif method == "POST" and "minutes" not in body:
            body["minutes"] = 30
    elif path.startswith("/api/v1/expenses"):
        if "project_id" in body:
            body["project_id"] = FIXTURES["project"]
        # A receipt is a file of the expense's project (every generated expense is on `project`).
        if _given(body.get("receipt_file_id")):
            body["receipt_file_id"] = FIXTURES["file"]
    elif path.startswith("/api/v1/invoices/{invoice}/expenses"):
        # Expenses to bill are data: the filters pick them (a project of the client, dates in order).
        body.pop("expense_ids", None)
        if _given(body.get("project_id")):
            body["project_id"] = FIXTURES["project"]
        _ordered(body, "from", "to", None)
    elif path.startswith("/api/v1/timer"):
        if "project_id" in body:
            body["project_id"] = FIXTURES["project"]
        if _given(body.get("task_id")):
            body["task_id"] = FIXTURES["task"]
    elif path.startswith("/api/v1/invoices/{invoice}/time"):
        # Entries to bill are data: the filters pick them (a project of the client, dates in order).
        body.pop("entry_ids", None)
        if _given(body.get("project_id")):
            body["project_id"] = FIXTURES["project"]
        if _given(body.get("group")):
            body["group"] = "entry"
        _ordered(body, "from", "to", None)
    elif path == "/api/v1/clients/{client}/statement/email":
        # A range of days runs forwards; a first day alone brings its last.
        _ordered(body, "from", "to", lambda day: day)
    elif path == "/api/v1/invoices/{invoice}/repeat":
        # At most 12 months between copies (52 weeks is the document's bound); the first day not
        # in the past and the last not before the first (the seeded repeats start in 2990), for a
        # new repeat and a changed one.
        every = body.get("every")
        if body.get("unit", "month") == "month" and isinstance(every, (int, float)) and every > 12:
            body["every"] = 12
        if _given(body.get("starts_on")):
            body["starts_on"] = "2990-01-01"
        # A changed schedule's next copy: not in the past, not after the last day.
        if _given(body.get("next_on")):
            body["next_on"] = "2990-02-01"
        if _given(body.get("ends_on")):
            body["ends_on"] = "2999-12-31"
    elif path.startswith("/api/v1/invoices/{invoice}/payments"):
        # What the invoice still owes bounds the amount, and the day can't be after today.
        if "amount_minor" in body:
            body["amount_minor"] = 1
        if "paid_on" in body:
            body["paid_on"] = "2024-01-31"
    elif path.startswith("/api/v1/invoices"):
        # Payment terms or a due date, not both.
        if "payment_terms_days" in body and "due_date" in body:
            del body["payment_terms_days"]
        if "client_id" in body:
            body["client_id"] = FIXTURES["client"]
        # An invoice's dates can't be emptied: a date sent alone brings the same date along.
        _ordered(body, "issue_date", "due_date", (lambda d: d) if method == "PATCH" else None)
        if method == "POST" and "due_date" in body and "issue_date" not in body:
            body["issue_date"] = body["due_date"]
        _lines(body)
    elif path.startswith("/api/v1/files"):
        if "project_id" in body:
            body["project_id"] = FIXTURES["project"]
        if _given(body.get("task_id")):
            body["task_id"] = FIXTURES["task"]
        if "file" in body:
            body["file"] = b"Generated by the API fuzzer.\n"


def _spares(method, path):
    """The spare records to use instead of seeded ones, for requests that would destroy or
    freeze what the other requests refer to: deletions, and an invoice's send, pay and void;
    and for copies, a project without tasks (the task hooks keep every task in the seeded
    project, which a copy of it would break)."""
    if method == "POST" and path == "/api/v1/projects/{project}/copy":
        return {"project": FIXTURES["copy_source"]}
    if method == "DELETE" and path.endswith("/payments/{payment}"):
        return {"invoice": FIXTURES["payment_invoice"], "payment": FIXTURES["spare_payment"]}
    if method == "DELETE" and path.endswith("/comments/{comment}"):
        return {"comment": FIXTURES["spare_comment"]}
    if method == "DELETE":
        return DELETE
    if method == "POST" and path == "/api/v1/invoices/{invoice}/payments":
        return {"invoice": FIXTURES["payment_invoice"]}
    if method == "POST" and path.startswith("/api/v1/invoices/{invoice}/"):
        return {"invoice": FIXTURES["action_invoice"]}
    return {}


def _names_a_fixture(case, spares):
    params = case.path_parameters or {}
    return any(name in spares and value == READ.get(name) for name, value in params.items())


def _point_at_records(case, method, path, stateful):
    """Path ids naming seeded records (their spares, where the request would destroy one).
    In the stateful phase the ids come from the document's links and are kept, unless they
    name a seeded record the request would destroy."""
    spares = _spares(method, path)
    params = case.path_parameters or {}
    for name, value in params.items():
        if name in spares and (not stateful or value == READ.get(name)):
            params[name] = spares[name]
        elif name in READ and not stateful:
            params[name] = READ[name]


_keys = itertools.count()


def _fresh_idempotency_key(case):
    """Generated keys repeat (`0`, `a`…), and once a request succeeds with a key, any other
    request with it is a 409 before anything else is looked at: each valid request gets a key of
    its own, so that what follows the key is what gets tested."""
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key":
            headers[name] = f"fuzz-{next(_keys)}"


@schemathesis.hook
def filter_case(context, case):
    """Schemathesis reuses ids it saw in responses, in every kind of case. An invalid request
    that names a seeded record in a deletion or an invoice transition could still succeed (its
    fault may be somewhere the server doesn't look), so it is not sent at all: changing it
    would change what makes it invalid."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return True
    return not _names_a_fixture(case, _spares(case.operation.method.upper(), case.operation.path))


def _query(case, method, path):
    """A range of days runs forwards; a first day alone brings its last (whose default, today,
    may come before a generated day)."""
    ranged = ("/api/v1/payments", "/api/v1/clients/{client}/statement")
    if method == "GET" and path in ranged and isinstance(case.query, dict):
        _ordered(case.query, "from", "to", lambda day: day)


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if meta is None or meta.generation.mode.is_negative:
        return case
    method = case.operation.method.upper()
    path = case.operation.path
    _fresh_idempotency_key(case)
    _point_at_records(case, method, path, stateful=meta.phase.name == "stateful")
    _body(case, method, path)
    _query(case, method, path)
    return case


if os.environ.get("CLIENTFLOW_FUZZ_LOG"):

    @schemathesis.hook
    def after_call(context, case, response):
        """Every request's operation, kind (positive or negative), phase and status, for looking
        into a run."""
        meta = case.meta
        with open(os.environ["CLIENTFLOW_FUZZ_LOG"], "a") as log:
            entry = {
                "operation": f"{case.operation.method.upper()} {case.operation.path}",
                "mode": str(meta.generation.mode) if meta else None,
                "phase": str(meta.phase.name) if meta else None,
                "status": response.status_code,
            }
            log.write(json.dumps(entry) + "\n")
