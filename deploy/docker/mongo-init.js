// natter: makes mongo-0, mongo-1 and mongo-2 the replica set rs0, then
// waits for a primary. Run by compose.yaml's one-shot "mongo-init" once the
// three are healthy; running it again on an initiated set changes nothing.
const members = [
  { _id: 0, host: "mongo-0:27017" },
  { _id: 1, host: "mongo-1:27017" },
  { _id: 2, host: "mongo-2:27017" },
];

try {
  const status = rs.status();
  print(`replica set ${status.set} already initiated`);
} catch (e) {
  if (e.codeName !== "NotYetInitialized") {
    throw e;
  }
  rs.initiate({ _id: "rs0", members: members });
  print("replica set rs0 initiated");
}

// auth needs a primary for its writes (majority write concern); an
// election takes a few seconds.
for (let i = 0; i < 60; i++) {
  const primary = db.hello().primary;
  if (primary) {
    print(`primary: ${primary}`);
    quit(0);
  }
  sleep(1000);
}
print("no primary after 60 s");
quit(1);
