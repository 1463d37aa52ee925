use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let cache: u64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let t = Instant::now();
    let db = sled::Config::new()
        .path(&path)
        .cache_capacity(cache << 20)
        .open()
        .unwrap();
    println!("open {:?}", t.elapsed());
    let tree = db.open_tree("keyward").unwrap();
    for _ in 0..2 {
        let t = Instant::now();
        let mut n = 0usize;
        let mut bytes = 0usize;
        for r in tree.iter() {
            let (_k, v) = r.unwrap();
            n += 1;
            bytes += v.len();
        }
        println!("tree iter {:?} n={n} bytes={bytes}", t.elapsed());
    }
}
