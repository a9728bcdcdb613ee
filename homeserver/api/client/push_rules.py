"""``/pushrules``: read and change the user's push rules (scope ``global`` only)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.api.client.paths import client_paths
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import parse_json_body, parse_string
from homeserver.push.rules import PushRuleSet
from homeserver.push.rules_handler import PushRulesHandler

RULE = "/pushrules/global/{kind}/{ruleId}"


class PushRuleServlets:
    def __init__(self, auth: AuthHandler, rules: PushRulesHandler) -> None:
        self._auth = auth
        self._rules = rules

    def register(self, r: JsonResource) -> None:
        r.register_many("GET", client_paths("/pushrules/"), self.on_get_all)
        r.register_many("GET", client_paths("/pushrules/global/"), self.on_get_global)
        r.register_many("GET", client_paths("/pushrules/global/{kind}/"), self.on_get_kind)
        r.register_many("GET", client_paths(RULE), self.on_get_rule)
        r.register_many("PUT", client_paths(RULE), self.on_put_rule)
        r.register_many("DELETE", client_paths(RULE), self.on_delete_rule)
        for attr in ("enabled", "actions"):
            r.register_many("GET", client_paths(f"{RULE}/{attr}"), self._get_attr(attr))
            r.register_many("PUT", client_paths(f"{RULE}/{attr}"), self._put_attr(attr))
        # Anything else below /pushrules/ (no or an unknown scope, a missing kind or rule
        # id, an unknown attribute) is a malformed push rule path: 400 M_UNRECOGNIZED, as
        # Synapse answers, not 404/405. (GET /pushrules without the slash stays a 404.)
        for method in ("GET", "PUT", "DELETE"):
            r.register_many(method, client_paths("/pushrules/{rest*}"), self.on_malformed)

    async def on_malformed(self, request: Request, rest: str) -> tuple[int, Any]:
        await self._auth.get_user_by_req(request)
        raise MatrixError(400, Codes.UNRECOGNIZED, "Unrecognized push rule path")

    async def _ruleset(self, request: Request) -> PushRuleSet:
        requester = await self._auth.get_user_by_req(request)
        return await self._rules.get(requester.user_id)

    async def on_get_all(self, request: Request) -> tuple[int, Any]:
        return 200, (await self._ruleset(request)).to_client_json()

    async def on_get_global(self, request: Request) -> tuple[int, Any]:
        return 200, (await self._ruleset(request)).ruleset_json()

    async def on_get_kind(self, request: Request, kind: str) -> tuple[int, Any]:
        ruleset = await self._ruleset(request)
        return 200, [rule.to_json() for rule in ruleset.rules(kind)]

    async def on_get_rule(self, request: Request, kind: str, ruleId: str) -> tuple[int, Any]:
        ruleset = await self._ruleset(request)
        return 200, ruleset.get_rule(kind, ruleId).to_json()

    async def on_put_rule(self, request: Request, kind: str, ruleId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        body = parse_json_body(request)
        before = parse_string(request, "before")
        after = parse_string(request, "after")
        await self._rules.change(
            requester.user_id,
            lambda ruleset: ruleset.add_rule(kind, ruleId, body, before=before, after=after),
        )
        return 200, {}

    async def on_delete_rule(self, request: Request, kind: str, ruleId: str) -> tuple[int, Any]:
        requester = await self._auth.get_user_by_req(request)
        await self._rules.change(
            requester.user_id, lambda ruleset: ruleset.delete_rule(kind, ruleId)
        )
        return 200, {}

    def _get_attr(self, attr: str) -> Any:
        async def handler(request: Request, kind: str, ruleId: str) -> tuple[int, Any]:
            rule = (await self._ruleset(request)).get_rule(kind, ruleId)
            return 200, {attr: rule.enabled if attr == "enabled" else list(rule.actions)}

        return handler

    def _put_attr(self, attr: str) -> Any:
        async def handler(request: Request, kind: str, ruleId: str) -> tuple[int, Any]:
            requester = await self._auth.get_user_by_req(request)
            body = parse_json_body(request)
            value = body.get(attr)

            def apply(ruleset: PushRuleSet) -> None:
                if attr == "enabled":
                    ruleset.set_enabled(kind, ruleId, value)
                else:
                    ruleset.set_actions(kind, ruleId, value)

            await self._rules.change(requester.user_id, apply)
            return 200, {}

        return handler
