// Hydrogen (hydrogen-view-sdk's complete app: login, session, room list, rooms), as its
// own web app starts it. Bundled by esbuild into app.js; served by the test with the
// SDK's assets under /assets/ and olm under /olm/. The homeserver comes from ?hs=.
import {
    Platform,
    RootViewModel,
    FeatureSet,
    createNavigation,
    createRouter,
} from "hydrogen-view-sdk";

async function main() {
    const homeserver = new URLSearchParams(window.location.search).get("hs");
    const container = document.getElementById("app");
    const platform = new Platform({
        container,
        assetPaths: {
            downloadSandbox: "/assets/download-sandbox.html",
            worker: "/assets/main.js",
            serviceWorker: "/sw.js",
            olm: {
                wasm: "/olm/olm.wasm",
                legacyBundle: "/olm/olm_legacy.js",
                wasmBundle: "/olm/olm.js",
            },
        },
        config: { defaultHomeServer: homeserver },
        options: { development: false },
    });
    const navigation = createNavigation();
    platform.setNavigation(navigation);
    await platform.init();
    const urlRouter = createRouter({ navigation, history: platform.history });
    urlRouter.attach();
    const features = await FeatureSet.load(platform.settingsStorage);
    const vm = new RootViewModel({ platform, urlRouter, navigation, features });
    await vm.load();
    platform.createAndMountRootView(vm);
    window.__hydrogenReady = true;
}

main().catch((err) => {
    window.__hydrogenError = String(err && err.stack ? err.stack : err);
    console.error(err);
});
