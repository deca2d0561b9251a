#!/usr/bin/env python3
"""Opens a URL in headless Chromium and prints the resulting DOM (for the auth browser tests).

Chromium cannot set cookies from its command line, so this drives it over the DevTools
protocol (the `websockets` package): set an optional cookie for the URL, navigate, wait for the
load event, print `document.documentElement.outerHTML`.

usage: browser_page.py URL --resolve 'MAP *.tp.test 127.0.0.1:8080' [--cookie NAME=VALUE]
                       [--screenshot FILE.png]
"""

import argparse
import base64
import contextlib
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import websockets


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("chromium not found: run scripts/install-test-deps")


@contextlib.contextmanager
def headless_chromium(resolve, prefix):
    """Runs headless Chromium with a fresh profile and host names mapped by `resolve`
    (--host-resolver-rules); yields the path of its DevToolsActivePort file, then stops it and
    removes the profile."""
    profile = tempfile.mkdtemp(prefix=prefix)
    process = subprocess.Popen(
        [
            chromium_binary(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable",
            f"--user-data-dir={profile}",
            f"--host-resolver-rules={resolve}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield os.path.join(profile, "DevToolsActivePort")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


class Cdp:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events = []

    async def call(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    async def wait_event(self, method, timeout):
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(method)
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), remaining))
            self.events.append(reply)


@contextlib.asynccontextmanager
async def devtools_page(port_file):
    """Connects to the DevTools port Chromium writes to `port_file` (waiting up to 30 s for
    it) and yields the connection and the session of a new blank page."""
    deadline = time.monotonic() + 30
    while not (os.path.exists(port_file) and len(open(port_file).read().split("\n")) >= 2):
        if time.monotonic() > deadline:
            raise TimeoutError("chromium did not open its DevTools port")
        await asyncio.sleep(0.1)
    port, path = open(port_file).read().split("\n")[:2]
    async with websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
        cdp = Cdp(ws)
        target = await cdp.call("Target.createTarget", {"url": "about:blank"})
        attached = await cdp.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        yield cdp, attached["sessionId"]


async def run(args, port_file):
    async with devtools_page(port_file) as (cdp, session):
        await cdp.call("Network.enable", session=session)
        await cdp.call("Page.enable", session=session)
        if args.cookie:
            name, _, value = args.cookie.partition("=")
            ok = await cdp.call(
                "Network.setCookie",
                {"name": name, "value": value, "url": args.url},
                session=session,
            )
            if not ok.get("success", True):
                raise RuntimeError("Network.setCookie failed")
        await cdp.call("Page.navigate", {"url": args.url}, session=session)
        await cdp.wait_event("Page.loadEventFired", args.timeout)
        result = await cdp.call(
            "Runtime.evaluate",
            {"expression": "document.documentElement.outerHTML", "returnByValue": True},
            session=session,
        )
        print(result["result"]["value"])
        if args.screenshot:
            await cdp.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            shot = await cdp.call(
                "Page.captureScreenshot",
                {"format": "png", "captureBeyondViewport": True},
                session=session,
            )
            with open(args.screenshot, "wb") as out:
                out.write(base64.b64decode(shot["data"]))
        try:
            await cdp.call("Browser.close")
        except Exception:
            pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--resolve", required=True, help="--host-resolver-rules value")
    parser.add_argument("--cookie", help="NAME=VALUE set for the URL before navigating")
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--screenshot", help="also save a PNG of the page here")
    args = parser.parse_args()
    with headless_chromium(args.resolve, "tp-chromium-") as devtools_port_file:
        asyncio.run(run(args, devtools_port_file))


if __name__ == "__main__":
    main()
