// matrix-js-sdk's SlidingSync (simplified sliding sync, MSC4186) against our homeserver.
// Usage: node sliding_scenario.mjs BASE_URL  (users alice and bob exist, password in PASSWORD env).
// Alice syncs through SlidingSync + SlidingSyncSdk (client.startClient({slidingSync})) with
// one list (ranges [0,10], timeline_limit 5) and a room subscription; bob, not syncing,
// sends a message, a read receipt for alice's message and a typing notification.
// Prints "ok: <step>" lines; exits non-zero with the failing step on stderr.
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { SlidingSync } from "matrix-js-sdk/lib/sliding-sync.js";

const baseUrl = process.argv[2];
const password = process.env.PASSWORD;
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS || 15000);
logger.setLevel(process.env.SDK_LOG_LEVEL || "error");

function ok(step) {
    console.log(`ok: ${step}`);
}

// Resolves with check()'s value once it is truthy, polled every 50 ms.
function waitFor(what, check) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            clearInterval(interval);
            reject(new Error(`timed out after ${STEP_TIMEOUT_MS} ms: ${what}`));
        }, STEP_TIMEOUT_MS);
        const poll = () => {
            let value;
            try {
                value = check();
            } catch (e) {
                value = undefined;
            }
            if (value) {
                clearInterval(interval);
                clearTimeout(timer);
                resolve(value);
            }
        };
        const interval = setInterval(poll, 50);
        poll();
    });
}

async function login(user) {
    const bare = sdk.createClient({ baseUrl });
    const resp = await bare.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user },
        password,
    });
    return sdk.createClient({
        baseUrl,
        userId: resp.user_id,
        accessToken: resp.access_token,
        deviceId: resp.device_id,
    });
}

function liveBodies(room) {
    return room
        .getLiveTimeline()
        .getEvents()
        .filter((e) => e.getType() === "m.room.message")
        .map((e) => e.getContent().body);
}

async function main() {
    const alice = await login("alice");
    const bob = await login("bob");
    // Before alice syncs: two rooms of her own, then bob's room, which she joins.
    for (const name of ["alice one", "alice two"]) {
        const { room_id } = await alice.createRoom({ name });
        await alice.sendTextMessage(room_id, `first message in ${name}`);
    }
    const { room_id: shared } = await bob.createRoom({ name: "shared", invite: [alice.getUserId()] });
    await alice.joinRoom(shared);
    await bob.sendTextMessage(shared, "welcome");
    ok("rooms set up");

    const allState = [["*", "*"]];
    const lists = new Map([["all", { ranges: [[0, 10]], timeline_limit: 5, required_state: allState }]]);
    const slidingSync = new SlidingSync(baseUrl, lists, { timeline_limit: 20, required_state: allState }, alice, 10000);
    const prepared = new Promise((resolve, reject) => {
        alice.on(sdk.ClientEvent.Sync, (state) => {
            if (state === "PREPARED") resolve();
            if (state === "ERROR") reject(new Error("alice: sync error"));
        });
    });
    await alice.startClient({ slidingSync });
    await prepared;
    await waitFor("the list counts 3 rooms", () => slidingSync.getListData("all")?.joinedCount === 3);
    await waitFor("the list's rooms and timelines", () => {
        const names = alice.getRooms().map((r) => r.name).sort();
        const room = alice.getRoom(shared);
        return (
            JSON.stringify(names) === JSON.stringify(["alice one", "alice two", "shared"]) &&
            liveBodies(room).includes("welcome")
        );
    });
    ok("room list");

    slidingSync.modifyRoomSubscriptions(new Set([shared]));
    const room = alice.getRoom(shared);
    await bob.sendTextMessage(shared, "hello from bob");
    await waitFor("bob's message", () => liveBodies(room).includes("hello from bob"));
    ok("message");

    const { event_id: aliceEvent } = await alice.sendTextMessage(shared, "hello from alice");
    await bob.http.authedRequest(
        "POST",
        `/rooms/${encodeURIComponent(shared)}/receipt/m.read/${encodeURIComponent(aliceEvent)}`,
        undefined,
        {},
    );
    await waitFor(
        "bob's read receipt",
        () => room.getReadReceiptForUserId(bob.getUserId(), true)?.eventId === aliceEvent,
    );
    ok("receipt");

    await bob.sendTyping(shared, true, 20000);
    await waitFor("bob typing", () => room.getMember(bob.getUserId())?.typing === true);
    await bob.sendTyping(shared, false, 0);
    await waitFor("bob stopped typing", () => room.getMember(bob.getUserId())?.typing === false);
    ok("typing");

    alice.stopClient();
    slidingSync.stop();
}

main().then(
    () => process.exit(0),
    (err) => {
        console.error(err && err.stack ? err.stack : err);
        process.exit(1);
    },
);
