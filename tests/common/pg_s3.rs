//! kvstore on PostgreSQL with bodies in an S3 server, for tests/object_store*.rs.

use std::time::{Duration, Instant};

use kvstore::storage::objects::{ObjectStoreOptions, Objects};
use reqwest::Method;

use super::{object_options, PgDatabase, TestServer};

/// A body whose bytes depend on `seed`, so that two versions never compare equal by accident.
pub fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 10) as u8))
        .collect()
}

/// kvstore on a fresh database with bodies of `min_bytes` or more under a prefix of their own.
pub struct PgS3 {
    pub server: TestServer,
    pub objects: Objects,
    pub db: PgDatabase,
    pub token: String,
    pub store: String,
    /// What the server was started with, for a second node on the same database and bucket.
    pub options: ObjectStoreOptions,
}

impl PgS3 {
    pub async fn start(
        endpoint: &str,
        min_bytes: u64,
        grace: Duration,
        timeout: Duration,
    ) -> Option<Self> {
        let db = PgDatabase::create().await?;
        let options = ObjectStoreOptions {
            gc_grace: grace,
            op_timeout: timeout,
            ..object_options(endpoint, min_bytes)
        };
        let objects = Objects::new(&options).unwrap();
        let server = TestServer::start_on(&db.backend_with_objects(options.clone()), |_| {}).await;
        let token = server.user("alice").await;
        let store = server.create_store(&token, Some("bodies")).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        Some(Self {
            server,
            objects,
            db,
            token,
            store,
            options,
        })
    }

    pub fn path(&self, key: &str) -> String {
        format!("/v2/key-value-stores/{}/records/{key}", self.store)
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.server
            .req(Method::PUT, &self.path(key), Some(&self.token))
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, key: &str) -> reqwest::Response {
        self.server
            .get(&self.path(key), &self.token)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_bytes(&self, key: &str) -> Vec<u8> {
        let resp = self.get(key).await;
        assert_eq!(resp.status(), 200, "GET {key}");
        resp.bytes().await.unwrap().to_vec()
    }

    /// (objects in the bucket under this server's prefix, rows naming an object)
    pub async fn counts(&self) -> (usize, i64) {
        use sqlx::Connection;
        let in_bucket = self.objects.list("").await.unwrap().len();
        let mut conn = sqlx::PgConnection::connect(&self.db.url).await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM records WHERE object IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        (in_bucket, rows)
    }

    /// Waits (up to `limit`) until the bucket holds exactly the objects the rows name.
    pub async fn wait_for_collection(&self, limit: Duration) -> (usize, i64) {
        let start = Instant::now();
        loop {
            let (objects, rows) = self.counts().await;
            if objects == rows as usize || start.elapsed() > limit {
                return (objects, rows);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
