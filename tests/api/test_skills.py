"""``/v1/skills`` through the official SDK against a real server: skills from a folder's files or a
zip, versions and the default, content, refusals that name the problem, and project isolation."""

from __future__ import annotations

import io
import os
import shutil
import stat
import zipfile
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import Server, _server_env, data_dir
from tests.postgres import PostgresServer
from tests.scripted_upstream import ScriptedUpstream

pytestmark = pytest.mark.root


def manifest(name: str = "csv-stats", description: str = "Sums a column of a CSV file.") -> bytes:
    return (f"---\nname: {name}\ndescription: {description}\n---\n"
            "# csv-stats\nRun `python3 scripts/sum.py FILE`.\n").encode()


SCRIPT = b"import csv, sys\nprint(sum(float(row[1]) for row in csv.reader(open(sys.argv[1]))))\n"


def folder_zip(entries: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = ((stat.S_IFLNK | 0o777) if name in links else (stat.S_IFREG | 0o644)) << 16
            archive.writestr(info, data)
    return out.getvalue()


@pytest.fixture
def skills(client: openai.OpenAI) -> Iterator[openai.OpenAI]:
    """The client; the skills a test made are deleted after it."""
    before = {skill.id for skill in client.skills.list(limit=100)}
    yield client
    for skill in client.skills.list(limit=100):
        if skill.id not in before:
            client.skills.delete(skill.id)


def test_create_from_files_list_retrieve_content_delete(skills: openai.OpenAI) -> None:
    created = skills.skills.create(files=[("csv-stats/SKILL.md", manifest()),
                                          ("csv-stats/scripts/sum.py", SCRIPT)])
    assert (created.object, created.name, created.description) == ("skill", "csv-stats", "Sums a column of a CSV file.")
    assert (created.default_version, created.latest_version) == ("1", "1")
    assert skills.skills.retrieve(created.id) == created
    assert created.id in [skill.id for skill in skills.skills.list()]
    content = skills.skills.content.retrieve(created.id)
    with zipfile.ZipFile(io.BytesIO(content.read())) as archive:
        assert sorted(archive.namelist()) == ["csv-stats/SKILL.md", "csv-stats/scripts/sum.py"]
        assert archive.read("csv-stats/scripts/sum.py") == SCRIPT
    deleted = skills.skills.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "skill.deleted", True)
    with pytest.raises(openai.NotFoundError):
        skills.skills.retrieve(created.id)


def test_create_from_a_zip_and_versions(skills: openai.OpenAI) -> None:
    first = skills.skills.create(files=("skill.zip", folder_zip({"tool/SKILL.md": manifest("tool", "First."),
                                                                  "tool/run.sh": b"#!/bin/sh\necho one\n"})))
    assert (first.name, first.description) == ("tool", "First.")
    second = skills.skills.versions.create(first.id, files=("v2.zip", folder_zip({
        "SKILL.md": manifest("tool", "Second."), "run.sh": b"#!/bin/sh\necho two\n"})))
    assert (second.object, second.skill_id, second.version, second.description) == (
        "skill.version", first.id, "2", "Second.")
    skill = skills.skills.retrieve(first.id)
    assert (skill.default_version, skill.latest_version, skill.description) == ("1", "2", "First.")
    third = skills.skills.versions.create(first.id, default=True, files=[("SKILL.md", manifest("tool", "Third."))])
    skill = skills.skills.retrieve(first.id)
    assert (skill.default_version, skill.latest_version, skill.description) == ("3", "3", "Third.")
    assert [v.version for v in skills.skills.versions.list(first.id, order="asc")] == ["1", "2", "3"]
    assert skills.skills.versions.retrieve("2", skill_id=first.id) == second
    assert skills.skills.versions.retrieve("latest", skill_id=first.id) == third
    old = skills.skills.versions.content.retrieve("2", skill_id=first.id).read()
    with zipfile.ZipFile(io.BytesIO(old)) as archive:
        assert archive.read("tool/run.sh") == b"#!/bin/sh\necho two\n"
    updated = skills.skills.update(first.id, default_version="2")
    assert (updated.default_version, updated.description) == ("2", "Second.")
    with pytest.raises(openai.BadRequestError, match="is the default"):
        skills.skills.versions.delete("2", skill_id=first.id)
    gone = skills.skills.versions.delete("3", skill_id=first.id)
    assert (gone.object, gone.version, gone.deleted) == ("skill.version.deleted", "3", True)
    assert skills.skills.retrieve(first.id).latest_version == "2"
    with pytest.raises(openai.NotFoundError):
        skills.skills.versions.retrieve("3", skill_id=first.id)
    with pytest.raises(openai.NotFoundError):
        skills.skills.update(first.id, default_version="3")


@pytest.mark.parametrize(("files", "problem"), [
    ([("SKILL.md", b"no front matter\n")], "must open with YAML front matter"),
    ([("SKILL.md", manifest(name="Not_Valid"))], "'name' must be 1 to 64 lowercase"),
    ([("SKILL.md", b"---\nname: x\n---\n")], "has no 'description'"),
    ([("README.md", b"hello")], "needs a SKILL.md"),
    ([("SKILL.md", manifest()), ("../escape.sh", b"x")], "must stay inside the skill"),
    ([("skill.zip", folder_zip({"SKILL.md": manifest(), "link": b"/etc/shadow"}, links=("link",)))],
     "not a regular file"),
    ([("bomb.zip", folder_zip({"SKILL.md": manifest(), "zeros": b"\0" * (40 << 20)}))], "at most 33554432 bytes"),
])
def test_bad_skills_are_400s_naming_the_problem(skills: openai.OpenAI, files: list[tuple[str, bytes]],
                                                problem: str) -> None:
    before = [skill.id for skill in skills.skills.list(limit=100)]
    with pytest.raises(openai.BadRequestError, match=problem) as refused:
        skills.skills.create(files=files)
    assert refused.value.body["param"] == "files"  # type: ignore[index]
    assert [skill.id for skill in skills.skills.list(limit=100)] == before


def test_another_project_never_sees_a_skill(skills: openai.OpenAI, server: Server) -> None:
    mine = skills.skills.create(files=[("SKILL.md", manifest("private-tool"))])
    other = server.client("beta")
    assert mine.id not in [skill.id for skill in other.skills.list(limit=100)]
    for attempt in (lambda: other.skills.retrieve(mine.id), lambda: other.skills.content.retrieve(mine.id),
                    lambda: other.skills.delete(mine.id), lambda: other.skills.versions.list(mine.id),
                    lambda: other.skills.update(mine.id, default_version="1"),
                    lambda: other.skills.versions.create(mine.id, files=[("SKILL.md", manifest())])):
        with pytest.raises(openai.NotFoundError):
            attempt()
    with pytest.raises(openai.NotFoundError):
        other.containers.create(name="steal", skills=[{"type": "skill_reference", "skill_id": mine.id}])
    assert skills.skills.retrieve(mine.id).name == "private-tool"


@pytest.fixture
def capped(upstream: ScriptedUpstream, postgres: PostgresServer | None) -> Iterator[Server]:
    """A server whose skills hold at most 3 files, and whose project beta may store 1000 KiB."""
    srv = Server(data_dir("cove-skills"), {**_server_env(upstream, postgres), "COVE_SKILL_MAX_FILES": "3"})
    projects = srv.data_dir.with_name(srv.data_dir.name + "-projects.toml")
    projects.write_text('[projects.beta]\nfile_bytes = "1000k"\n')
    srv.env["COVE_PROJECTS_FILE"] = str(projects)
    srv.start()
    yield srv
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


def test_caps_and_the_shared_files_quota(capped: Server) -> None:
    beta = capped.client("beta")
    with pytest.raises(openai.BadRequestError, match="Maximum number of files is 3"):  # the parser stops it
        beta.skills.create(files=[("SKILL.md", manifest()), *((f"f{i}.txt", b"x") for i in range(3))])
    kept = beta.files.create(file=("one.bin", os.urandom(600_000)), purpose="user_data")
    with pytest.raises(openai.RateLimitError) as refused:
        beta.skills.create(files=[("SKILL.md", manifest()), ("blob.bin", os.urandom(600_000))])
    assert (refused.value.body["code"], refused.value.body["param"]) == ("quota_exceeded", "file_bytes")  # type: ignore[index]
    assert sorted(path.name for path in (capped.data_dir / "files").iterdir()) == [kept.id]  # no stray zip
    skill = beta.skills.create(files=[("SKILL.md", manifest()), ("blob.bin", os.urandom(300_000))])
    with pytest.raises(openai.RateLimitError):  # and files count the skills' bytes too
        beta.files.create(file=("two.bin", os.urandom(200_000)), purpose="user_data")
    beta.skills.delete(skill.id)
    beta.files.create(file=("two.bin", os.urandom(200_000)), purpose="user_data")


def test_objects_have_exactly_the_sdks_fields(skills: openai.OpenAI, server: Server) -> None:
    from openai.types import DeletedSkill, Skill
    from openai.types.skills import DeletedSkillVersion, SkillVersion

    with server.http() as http:
        made = http.post("/v1/skills", files={"files": ("SKILL.md", manifest())}).raise_for_status().json()
        version = http.post(f"/v1/skills/{made['id']}/versions", files={"files": ("SKILL.md", manifest())},
                            data={"default": "false"}).raise_for_status().json()
        gone_version = http.delete(f"/v1/skills/{made['id']}/versions/2").raise_for_status().json()
        gone = http.delete(f"/v1/skills/{made['id']}").raise_for_status().json()
    for body, model in ((made, Skill), (version, SkillVersion), (gone_version, DeletedSkillVersion),
                        (gone, DeletedSkill)):
        assert set(body) == set(model.model_fields), (body, model)
        assert model.model_validate(body, strict=True).model_dump() == body
