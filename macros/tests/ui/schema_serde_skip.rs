#[derive(serde::Serialize, serde::Deserialize, courier::Schema)]
pub struct Point {
    x: i32,
    #[serde(skip)]
    y: i32,
}

fn main() {}
