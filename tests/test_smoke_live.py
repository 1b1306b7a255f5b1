def test_server_starts_and_reports_health(server):
    import httpx
    r = httpx.get(f"{server.http_url}/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}  # a stranger learns nothing about the host (issue 10)
    r = httpx.get(f"{server.http_url}/healthz", headers={"Authorization": f"Bearer {server.admin_key()}"})
    body = r.json()
    assert body["status"] == "ok" and body["database"] == str(server.db)
    assert server.query("SELECT key FROM projects WHERE id = 1") == [("default",)]
