//! A private MariaDB primary and replica for replication tests (filled in by
//! the read-replica work of issue 15).
