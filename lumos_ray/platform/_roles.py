"""Which role may do what: one fixed table, deny by default.

Roles nest (viewer < developer < admin). An action not in the table is a programming
error in the caller (a route that forgot to name its action), raised loudly rather
than silently allowed or denied.
"""

from __future__ import annotations

from types import MappingProxyType

from lumos_ray.errors import InputValidationError, PermissionDeniedError
from lumos_ray.platform._types import Principal, Role

__all__ = ["ACTIONS", "check_action", "parse_role"]

#: action -> the least role that may perform it.
ACTIONS = MappingProxyType(
    {
        # viewer: look, never change
        "read": Role.VIEWER,
        # developer: do work
        "run": Role.DEVELOPER,
        "resume": Role.DEVELOPER,
        "cancel": Role.DEVELOPER,
        "submit": Role.DEVELOPER,
        "chat": Role.DEVELOPER,
        "embed": Role.DEVELOPER,
        # admin: manage the tenant
        "keys": Role.ADMIN,
        "tenants": Role.ADMIN,
        "plans": Role.ADMIN,
        "audit": Role.ADMIN,
    }
)


def parse_role(role: Role | str) -> Role:
    """A Role from its name; a clear error for anything else."""
    if isinstance(role, Role):
        return role
    try:
        return Role(str(role).lower())
    except ValueError:
        raise InputValidationError(
            f"Unknown role {str(role)[:40]!r}.",
            fix=f"Use one of: {', '.join(r.value for r in Role)}.",
        ) from None


def check_action(principal: Principal, action: str, tenant: str | None = None) -> None:
    """Raise PermissionDeniedError unless ``principal`` may do ``action`` (on
    ``tenant``, when given: a key acts only on its own tenant)."""
    need = ACTIONS.get(action)
    if need is None:
        raise InputValidationError(
            f"Unknown action {str(action)[:40]!r} in an authorization check.",
            fix=f"Name one of: {', '.join(ACTIONS)} (lumos_ray.platform.ACTIONS).",
        )
    if tenant is not None and tenant != principal.tenant:
        raise PermissionDeniedError(
            f"Key {principal.key_id} belongs to tenant {principal.tenant!r} and cannot "
            f"act on tenant {tenant!r}.",
            fix="Use a key of the tenant you want to act on.",
        )
    if principal.role.rank < need.rank:
        raise PermissionDeniedError(
            f"Action {action!r} needs the {need.value} role; key {principal.key_id} is "
            f"{principal.role.value}.",
            action=action,
            required_role=need.value,
        )
