"""``manage.py keyward_import_drf_api_key``: every key of
djangorestframework-api-key, imported into the project's keyward store
so that the key each client holds keeps working unchanged.

Each row's hash comes along as it is (3.x's ``sha512$$``, 2.x's Django
``pbkdf2_sha256$``), found by the row's prefix; its name, expiry and
creation time come too; a revoked key is imported disabled. The row's
prefix is kept in the key's metadata (``drf_api_key_prefix``), which is
how a second run knows what it imported already. ``--dry-run`` counts
and changes nothing.
"""

from __future__ import annotations

from typing import Any, Dict

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from keyward._errors import KeywardError
from keyward.django.config import store

#: Where the import keeps the row's prefix.
PREFIX_FIELD = "drf_api_key_prefix"


class Command(BaseCommand):
    help = (
        "Imports every djangorestframework-api-key key into keyward; each keeps working as its "
        "holders have it. Safe to run again: keys imported already are skipped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what would be imported; change nothing")
        parser.add_argument("--model", default="rest_framework_api_key.APIKey",
                            help="the API key model, as app_label.Model (a subclass of AbstractAPIKey)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            model = apps.get_model(options["model"])
        except (LookupError, ValueError) as e:
            raise CommandError(f"no model {options['model']}: {e}") from None
        keys = store()
        done = {k.metadata.get(PREFIX_FIELD) for k in keys.keys() if isinstance(k.metadata, dict)}
        counts: Dict[str, int] = {"imported": 0, "revoked": 0, "skipped": 0, "refused": 0}
        for row in model.objects.all().order_by("created"):
            if row.prefix in done:
                counts["skipped"] += 1
                continue
            if options["dry_run"]:
                counts["imported"] += 1
                counts["revoked"] += bool(row.revoked)
                continue
            try:
                keys.import_key(
                    row.name or f"drf-api-key {row.prefix}",
                    phc=row.hashed_key,
                    # The key is "<prefix>.<secret>": the dot makes the
                    # lookup exact whatever other prefixes there are.
                    prefix=f"{row.prefix}.",
                    expires_at=_aware(row.expiry_date),
                    metadata={PREFIX_FIELD: row.prefix, "drf_api_key_created": _aware(row.created).isoformat()},
                    disabled=bool(row.revoked),
                )
            except KeywardError as e:
                counts["refused"] += 1
                self.stderr.write(f"key {row.prefix} ({row.name!r}) not imported: {e}")
                continue
            done.add(row.prefix)
            counts["imported"] += 1
            counts["revoked"] += bool(row.revoked)
        verb = "Would import" if options["dry_run"] else "Imported"
        self.stdout.write(
            f"{verb} {counts['imported']} keys ({counts['revoked']} revoked, imported disabled); "
            f"{counts['skipped']} imported before; {counts['refused']} refused."
        )
        if counts["refused"]:
            raise CommandError(f"{counts['refused']} keys could not be imported (see above)")


def _aware(at: Any) -> Any:
    """A row's time, timezone-aware (a project with USE_TZ = False stores
    naive ones, in its TIME_ZONE)."""
    if at is None or timezone.is_aware(at):
        return at
    return timezone.make_aware(at)
