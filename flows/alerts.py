"""A notification when a nightly run fails: a Prefect notification block + an automation, created idempotently.

- `PTUNE_ALERT_WEBHOOK=<url>`: a *Custom Webhook* block `ptune-alerts` POSTs `{"subject", "body"}` as JSON to
  the URL (a loopback URL in the tests; private addresses are allowed only for loopback URLs);
- `PTUNE_ALERT_BLOCK=<block-type-slug>/<name>`: an existing notification block instead (Slack webhook, e-mail,
  Teams..., made in the UI or in Python; see docs/prefect.md).

The automation `ptune-nightly-failed` fires on `prefect.flow-run.{Failed,Crashed,TimedOut}` of the flow
`nightly` and sends the flow run's name, state, message and UI link through the block. Running setup again
updates both in place (one automation, one block), so a changed URL takes effect.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from urllib.parse import urlparse
from uuid import UUID

from prefect import get_client
from prefect.automations import AutomationCore, EventTrigger, Posture, SendNotification
from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock

ALERT_BLOCK = "ptune-alerts"
AUTOMATION = "ptune-nightly-failed"
FAILED_EVENTS = {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
SUBJECT = "ptune nightly {{ flow_run.state.name }}: {{ flow_run.name }}"
BODY = ("The ptune nightly run {{ flow_run.name }} ended {{ flow_run.state.name }}.\n"
        "{{ flow_run.state.message }}\n"
        "Run: {{ flow_run|ui_url }} (artifacts ptune-nightly and failure-*).")


def _loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_block(url: str) -> UUID:
    """Save (or overwrite) the Custom Webhook block `ptune-alerts` for `url`; returns its document id."""
    block = CustomWebhookNotificationBlock(name=ALERT_BLOCK, url=url, method="POST",
                                           json_data={"subject": "{{subject}}", "body": "{{body}}"},
                                           allow_private_urls=_loopback(url))
    return block.save(ALERT_BLOCK, overwrite=True)


def named_block(slug_and_name: str) -> UUID:
    """The document id of an existing notification block, e.g. `slack-webhook/ptune-alerts`."""
    block = Block.load(slug_and_name)
    return block._block_document_id


def nightly_alert(block_id: UUID, flow_name: str = "nightly") -> str:
    """Create or update the automation; returns "created" or "updated"."""
    automation = AutomationCore(
        name=AUTOMATION, description="ptune: tell someone when the nightly run fails",
        trigger=EventTrigger(expect=FAILED_EVENTS, match={"prefect.resource.id": "prefect.flow-run.*"},
                             match_related={"prefect.resource.role": "flow", "prefect.resource.name": flow_name},
                             posture=Posture.Reactive, threshold=1, within=timedelta(0)),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)])
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(AUTOMATION)
        if found:
            client.update_automation(found[0].id, automation)
            return "updated"
        client.create_automation(automation)
        return "created"


def ensure_alerts() -> str:
    """From the environment: the block and the automation, or a sentence saying none is configured."""
    if os.environ.get("PTUNE_ALERT_BLOCK"):
        block_id = named_block(os.environ["PTUNE_ALERT_BLOCK"])
    elif os.environ.get("PTUNE_ALERT_WEBHOOK"):
        block_id = webhook_block(os.environ["PTUNE_ALERT_WEBHOOK"])
    else:
        return "no alert (set PTUNE_ALERT_WEBHOOK or PTUNE_ALERT_BLOCK)"
    return f"automation {AUTOMATION!r}: {nightly_alert(block_id)}"
