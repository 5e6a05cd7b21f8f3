def test_migrated(db):
    assert db.execute("SELECT count(*) FROM event_types").fetchone()[0] == 3
