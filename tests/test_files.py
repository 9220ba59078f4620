"""core.files: one atomic write (with a temporary name a cleanup knows) and one lock (that can be tried)."""
import pytest

from core.files import atomic_output, atomic_write, file_lock


def test_a_lock_held_elsewhere_is_not_waited_for_when_asked_not_to(tmp_path):
    lock = tmp_path / "lock"
    with file_lock(lock) as held:                       # flock: a second open file is another holder
        assert held is True
        with file_lock(lock, wait=False) as other:
            assert other is False
    with file_lock(lock, wait=False) as held:           # released: taken at once
        assert held is True


def test_a_named_temporary_file_is_renamed_over_or_removed(tmp_path):
    target, tmp = tmp_path / "images.u8", tmp_path / "images.u8.tmp"
    atomic_write(target, b"old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_output(target, tmp=tmp) as t:
            assert t == tmp
            t.write_bytes(b"ha")
            raise OSError(28, "disk full")
    assert target.read_bytes() == b"old" and not tmp.exists()
    atomic_write(target, "new", tmp=tmp)
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["images.u8"]
