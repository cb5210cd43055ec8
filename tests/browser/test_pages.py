"""The sign-in pages in a real browser (Debian's chromium driven by Playwright)."""

from tests.conftest import PASSWORD


def test_password_sign_in_in_a_real_browser(provider, browser, tmp_path):
    person = provider.add_user()
    page = browser.new_page()
    try:
        authorize = (f"{provider.url.replace('127.0.0.1', 'localhost')}/oidc/auth?client_id=web&response_type=code"
                     "&scope=openid&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&state=b1")
        page.goto(authorize)
        page.get_by_label("Username or email").first.fill(person["username"])
        page.get_by_label("Password").fill(PASSWORD)
        with page.expect_request(lambda request: request.url.startswith("http://127.0.0.1:9/callback")) as caught:
            page.get_by_role("button", name="Sign in", exact=True).click()
        assert "code=" in caught.value.url and "state=b1" in caught.value.url
    finally:
        page.close()
