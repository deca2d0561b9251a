#!/usr/bin/env python3
"""The browser portal end to end in headless Chromium, driven over the DevTools protocol.

One browser profile walks what a person does: opens a service URL without credentials, lands
on the portal's login form, submits a token, comes back to the exact URL; opens a second
service without a second form; sees the landing page; uses a WebSocket; logs out; logs in as
another user and gets the 403 page; then visits the error pages. Screenshots go to --shots.
Every check raises with a message; the last line printed is a JSON summary for the caller.

usage: portal_browser.py CONFIG_JSON   (keys: see main())
"""

import asyncio
import json
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from browser_page import devtools_page, headless_chromium  # noqa: E402


class Page:
    def __init__(self, cdp, session, shots):
        self.cdp = cdp
        self.session = session
        self.shots = shots

    async def call(self, method, params=None):
        return await self.cdp.call(method, params, session=self.session)

    async def eval(self, expression, await_promise=False):
        result = await self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_load(self, timeout=20):
        await self.cdp.wait_event("Page.loadEventFired", timeout)
        # A redirect chain fires one load event at its end; let late ones settle.
        await asyncio.sleep(0.2)
        self.cdp.events = [e for e in self.cdp.events if e.get("method") != "Page.loadEventFired"]

    async def goto(self, url):
        self.cdp.events.clear()
        await self.call("Page.navigate", {"url": url})
        await self.wait_load()

    async def submit(self, js_fill):
        self.cdp.events.clear()
        await self.eval(js_fill)
        await self.wait_load()

    async def href(self):
        return await self.eval("location.href")

    async def text(self):
        return await self.eval("document.body ? document.body.innerText : ''")

    async def shot(self, name):
        path = os.path.join(self.shots, name)
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1200, "height": 800, "deviceScaleFactor": 1, "mobile": False},
        )
        shot = await self.call("Page.captureScreenshot", {"format": "png"})
        import base64

        with open(path, "wb") as out:
            out.write(base64.b64decode(shot["data"]))
        return path


def check(condition, message):
    if not condition:
        raise AssertionError(message)


async def log_in(page, token):
    await page.submit(
        "document.querySelector('#token').value = %s;"
        "document.querySelector('form[action=\"/login\"]').submit();" % json.dumps(token)
    )


def job_view(text):
    """The demo job's /headers answer, as the browser shows it."""
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionError(f"not the job's JSON: {text[:500]}")


def secrets_in(view, tokens):
    dump = json.dumps(view).lower()
    found = [s for s in ["tp_session", "tp_portal", "tp_csrf", "ticket="] if s in dump]
    found += [t for t in tokens if t.lower() in dump]
    return found


async def scenario(cdp, session, c):
    page = Page(cdp, session, c["shots"])
    summary = {}
    portal = urllib.parse.urlsplit(c["portal"])

    # 1. A service URL without credentials: the portal's login form, returning to it.
    await page.goto(c["web"])
    here = urllib.parse.urlsplit(await page.href())
    check(here.netloc == portal.netloc and here.path == "/login", f"not the login page: {here}")
    check("return=" in here.query, f"no return address: {here}")
    check(await page.eval("!!document.querySelector('form[method=post] input[name=token]')"), "no token form")
    summary["login_page"] = await page.shot("portal-login.png")

    # 2. A wrong token: the form again, with the reason.
    await log_in(page, "not-a-token")
    check("did not accept" in await page.text(), f"no error shown: {await page.text()}")
    summary["login_error"] = await page.shot("portal-login-error.png")

    # 3. alice's token: back at the exact URL and query; the job saw no session or ticket.
    await log_in(page, c["alice"])
    check(await page.href() == c["web"], f"not back at the service: {await page.href()}")
    view = job_view(await page.text())
    check(view.get("uri") == urllib.parse.urlsplit(c["web"]).path + "?" + urllib.parse.urlsplit(c["web"]).query,
          f"the job saw another URL: {view.get('uri')}")
    leaked = secrets_in(view, [c["alice"]])
    check(not leaked, f"the job saw {leaked}: {view}")
    summary["web_uri"] = view.get("uri")

    # 4. A second service: no second form.
    await page.goto(c["second"])
    check(await page.href() == c["second"], f"second service asked again: {await page.href()}")
    view = job_view(await page.text())
    check(not secrets_in(view, [c["alice"]]), f"the job saw secrets: {view}")

    # 5. The landing page lists both services; the filter box hides the others.
    await page.goto(c["portal"])
    text = await page.text()
    for domain in c["listed"]:
        check(domain in text, f"{domain} not on the landing page: {text}")
    for domain in c["not_listed"]:
        check(domain not in text, f"{domain} listed for alice: {text}")
    check("alice" in text, "the landing page does not say who is logged in")
    summary["landing"] = await page.shot("portal-landing.png")
    visible = await page.eval(
        "var f=document.querySelector('#filter'); f.value=%s; f.dispatchEvent(new Event('input'));"
        "Array.from(document.querySelectorAll('#services tbody tr')).filter(r=>r.style.display!=='none').length"
        % json.dumps(c["listed"][0])
    )
    check(visible == 1, f"the filter left {visible} rows")

    # 6. A WebSocket app works after login.
    await page.goto(c["ws_page"])
    echo = await page.eval(
        "new Promise((ok, fail) => { const ws = new WebSocket(location.origin.replace('http', 'ws') + '/ws');"
        "ws.onopen = () => ws.send('hello portal'); ws.onmessage = m => { ok(m.data); ws.close(); };"
        "ws.onerror = () => fail('websocket error'); setTimeout(() => fail('timeout'), 5000); })",
        await_promise=True,
    )
    check(echo == "hello portal", f"websocket echo: {echo!r}")
    summary["websocket"] = echo

    # 7. Logout ends the session on the service too.
    await page.goto(c["portal"])
    await page.submit("document.querySelector('#logout').click();")
    check("logged out" in (await page.text()).lower(), f"no logout notice: {await page.text()}")
    summary["logged_out"] = await page.shot("portal-logged-out.png")
    await page.goto(c["web"])
    here = urllib.parse.urlsplit(await page.href())
    check(here.netloc == portal.netloc and here.path == "/login", f"still logged in after logout: {here}")

    # 8. bob may not read alice's operation: the 403 page says who, which, and the ACL.
    await page.goto(c["web"])
    await log_in(page, c["bob"])
    check(await page.href() == c["web"], f"bob not sent back: {await page.href()}")
    text = await page.text()
    for expected in ["Access denied", "bob", c["operation"], "Who may read it"]:
        check(expected in text, f"{expected!r} not on the 403 page: {text}")
    summary["forbidden"] = await page.shot("error-403.png")

    # 9. A spent or forged ticket: the 401 page with a login button.
    await page.goto(c["bad_ticket"])
    text = await page.text()
    check("Log in required" in text and await page.eval("!!document.querySelector('#login')"),
          f"no 401 page: {text}")
    summary["unauthorized"] = await page.shot("error-401.png")

    # 10. The other error pages (bob may read these services).
    for name, url, expected in c["errors"]:
        await page.goto(url)
        text = await page.text()
        check(expected in text, f"{expected!r} not on {name}: {text}")
        summary[name] = await page.shot(f"error-{name}.png")
    return summary


async def run(c, port_file):
    async with devtools_page(port_file) as (cdp, session):
        await cdp.call("Page.enable", session=session)
        await cdp.call("Runtime.enable", session=session)
        summary = await scenario(cdp, session, c)
        try:
            await cdp.call("Browser.close")
        except Exception:
            pass
        return summary


def main():
    c = json.loads(sys.argv[1])
    with headless_chromium(c["resolve"], "tp-portal-") as devtools_port_file:
        summary = asyncio.run(run(c, devtools_port_file))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
