// matrix-js-sdk against our homeserver: threads, plain messages, an edit, a reaction.
// Usage: node scenario.mjs BASE_URL  (users alice and bob exist, password in PASSWORD env).
// Prints "ok: <step>" lines; exits non-zero with the failing step on stderr.
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const baseUrl = process.argv[2];
const password = process.env.PASSWORD;
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS || 15000);
logger.setLevel(process.env.SDK_LOG_LEVEL || "error");

function withTimeout(promise, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${STEP_TIMEOUT_MS} ms: ${what}`)), STEP_TIMEOUT_MS);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function ok(step) {
    console.log(`ok: ${step}`);
}

// Resolves when check() is true, re-evaluated on every event the client emits.
function waitFor(client, what, check) {
    return withTimeout(
        new Promise((resolve) => {
            const poll = () => {
                let value;
                try {
                    value = check();
                } catch (e) {
                    value = undefined;
                }
                if (value) {
                    clearInterval(interval);
                    resolve(value);
                }
            };
            const interval = setInterval(poll, 50);
            poll();
        }),
        what,
    );
}

async function login(user) {
    const bare = sdk.createClient({ baseUrl });
    const resp = await bare.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user },
        password,
        initial_device_display_name: `js-sdk ${user}`,
    });
    const client = sdk.createClient({
        baseUrl,
        userId: resp.user_id,
        accessToken: resp.access_token,
        deviceId: resp.device_id,
    });
    const prepared = new Promise((resolve, reject) => {
        client.on(sdk.ClientEvent.Sync, (state) => {
            if (state === "PREPARED") resolve();
            if (state === "ERROR") reject(new Error(`${user}: sync error`));
        });
    });
    await client.startClient({ threadSupport: true, initialSyncLimit: 20 });
    await withTimeout(prepared, `${user}: first sync`);
    return client;
}

function bodies(events) {
    return events.map((e) => e.getContent().body);
}

async function main() {
    const alice = await login("alice");
    const bob = await login("bob");
    ok("login and first sync");
    try {
        const { room_id: roomId } = await alice.createRoom({ preset: "public_chat", name: "js-sdk threads" });
        await waitFor(alice, "alice sees the room", () => alice.getRoom(roomId));
        await bob.joinRoom(roomId);
        await waitFor(alice, "alice sees bob join", () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join");
        ok("create and join");

        // Plain messages, both ways.
        const { event_id: helloId } = await withTimeout(
            alice.sendMessage(roomId, { msgtype: "m.text", body: "hello bob" }),
            "plain sendMessage",
        );
        await waitFor(bob, "bob sees hello", () => bob.getRoom(roomId)?.findEventById(helloId));
        await withTimeout(bob.sendTextMessage(roomId, "hello alice"), "bob sendTextMessage");
        await waitFor(alice, "alice sees bob's reply", () =>
            bodies(alice.getRoom(roomId).getLiveTimeline().getEvents()).includes("hello alice"),
        );
        ok("plain messages");

        // A thread: the root, then a reply sent through sendMessage(roomId, threadId, content).
        const { event_id: rootId } = await withTimeout(
            alice.sendMessage(roomId, { msgtype: "m.text", body: "thread root" }),
            "root sendMessage",
        );
        await waitFor(bob, "bob sees the root", () => bob.getRoom(roomId)?.findEventById(rootId));
        const { event_id: replyId } = await withTimeout(
            alice.sendMessage(roomId, rootId, { msgtype: "m.text", body: "first in thread" }),
            "thread reply sendMessage(roomId, rootId, content)",
        );
        ok("thread reply sent");
        const { event_id: reply2Id } = await withTimeout(
            bob.sendMessage(roomId, rootId, { msgtype: "m.text", body: "bob in thread" }),
            "bob's thread reply",
        );
        ok("second thread reply sent");
        const thread = await waitFor(bob, "bob sees both replies in the thread", () => {
            const t = bob.getRoom(roomId)?.getThread(rootId);
            const ids = t?.timeline.map((e) => e.getId()) ?? [];
            return ids.includes(replyId) && ids.includes(reply2Id) ? t : undefined;
        });
        if (thread.rootEvent?.getId() !== rootId) throw new Error(`thread root is ${thread.rootEvent?.getId()}`);
        await waitFor(alice, "alice's thread has both replies", () => {
            const t = alice.getRoom(roomId)?.getThread(rootId);
            return t && t.length >= 2 && t.replyToEvent?.getId() === reply2Id;
        });
        ok("thread seen by both");

        // An edit of a plain message.
        await withTimeout(
            alice.sendMessage(roomId, {
                msgtype: "m.text",
                body: " * hello bob (edited)",
                "m.new_content": { msgtype: "m.text", body: "hello bob (edited)" },
                "m.relates_to": { rel_type: "m.replace", event_id: helloId },
            }),
            "edit sendMessage",
        );
        await waitFor(bob, "bob sees the edit", () => {
            const ev = bob.getRoom(roomId).findEventById(helloId);
            return ev?.getContent().body === "hello bob (edited)";
        });
        ok("edit");

        // A reaction.
        await withTimeout(
            bob.sendEvent(roomId, "m.reaction", {
                "m.relates_to": { rel_type: "m.annotation", event_id: helloId, key: "👍" },
            }),
            "reaction sendEvent",
        );
        await waitFor(alice, "alice sees the reaction", () => {
            const room = alice.getRoom(roomId);
            const rels = room.relations.getChildEventsForEvent(helloId, "m.annotation", "m.reaction");
            return rels?.getSortedAnnotationsByKey()?.some(([key, events]) => key === "👍" && events.size === 1);
        });
        ok("reaction");
    } finally {
        alice.stopClient();
        bob.stopClient();
    }
}

main().then(
    () => {
        console.log("done");
        process.exit(0);
    },
    (err) => {
        console.error(`FAILED: ${err?.stack || err}`);
        process.exit(1);
    },
);
