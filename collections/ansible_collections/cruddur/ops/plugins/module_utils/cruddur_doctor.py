"""What db-doctor's two modules share (cruddur_db_doctor, cruddur_aws_doctor): one line per link,
OK, FAIL with the command that fixes it, or SKIP saying why, and the one result shape."""

from __future__ import annotations

STATUSES = ("ok", "fail", "skip")


class Report:
    def __init__(self, fixes: dict | None):
        self.links: list[dict] = []
        self.fixes = fixes or {}

    def add(self, link: str, status: str, detail: str, fix: str = "") -> bool:
        """Record a link; True only when it is OK. A failure's fix defaults to the link's own
        (by its first word: "roles cruddur_api" takes the fix of "roles")."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        entry = {"link": link, "status": status, "detail": detail}
        if status == "fail":
            entry["fix"] = fix or self.fixes.get(link.split(" ")[0], "")
        self.links.append(entry)
        return status == "ok"

    def ok(self, link: str, detail: str) -> bool:
        return self.add(link, "ok", detail)

    def fail(self, link: str, detail: str, fix: str = "") -> bool:
        return self.add(link, "fail", detail, fix)

    def skip(self, link: str, detail: str) -> bool:
        return self.add(link, "skip", detail)

    def result(self) -> dict:
        """The module's exit values: it never changes anything."""
        return {"changed": False, "links": self.links,
                "failed_links": [entry["link"] for entry in self.links if entry["status"] == "fail"]}
