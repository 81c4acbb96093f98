#include "common/pairing_code.h"

#include <gtest/gtest.h>
#include <openssl/rand.h>

#include <string>

#include "absl/strings/escaping.h"
#include "common/sha256.h"

namespace sidecar {
namespace {

Sha256Digest Counting(uint8_t start) {
  Sha256Digest d;
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<uint8_t>(start + i);
  return d;
}

Sha256Digest RandomDigest() {
  Sha256Digest d;
  EXPECT_EQ(RAND_bytes(d.data(), d.size()), 1);
  return d;
}

std::string Hex(absl::string_view s) { return absl::BytesToHexString(s); }

std::string Hex(const std::array<uint8_t, 5>& a) {
  return Hex(absl::string_view(reinterpret_cast<const char*>(a.data()), 5));
}

PairingCode Code(std::array<uint8_t, 5> secret, std::array<uint8_t, 5> tag) {
  PairingCode c;
  c.secret = secret;
  c.tag = tag;
  return c;
}

constexpr char kBadCodeMessage[] = "16 letters and digits";

TEST(PairingCodeTest, ToStringParseRoundTripsRandomCodes) {
  for (int i = 0; i < 2000; ++i) {
    PairingCode c;
    ASSERT_EQ(RAND_bytes(c.secret.data(), 5), 1);
    ASSERT_EQ(RAND_bytes(c.tag.data(), 5), 1);
    std::string text = c.ToString();
    ASSERT_EQ(text.size(), 19u) << text;
    EXPECT_EQ(text[4], '-');
    EXPECT_EQ(text[9], '-');
    EXPECT_EQ(text[14], '-');
    absl::StatusOr<PairingCode> back = PairingCode::Parse(text);
    ASSERT_TRUE(back.ok()) << text << ": " << back.status();
    EXPECT_EQ(back->secret, c.secret) << text;
    EXPECT_EQ(back->tag, c.tag) << text;
  }
}

TEST(PairingCodeTest, MadeCodesRoundTripAndMatch) {
  for (int i = 0; i < 200; ++i) {
    Sha256Digest inviter = RandomDigest();
    PairingCode c = PairingCode::Make(inviter);
    absl::StatusOr<PairingCode> back = PairingCode::Parse(c.ToString());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(back->MatchesInviter(inviter)) << c.ToString();
  }
}

TEST(PairingCodeTest, MakeDrawsFreshSecrets) {
  Sha256Digest inviter = RandomDigest();
  EXPECT_NE(PairingCode::Make(inviter).secret,
            PairingCode::Make(inviter).secret);
}

// Pins the bit order: secret then tag, most significant bit first, the
// same as RFC 4648 base32 with Crockford's alphabet.
TEST(PairingCodeTest, EncodesBigEndianSecretThenTag) {
  EXPECT_EQ(Code({1, 2, 3, 4, 5}, {0xaa, 0xbb, 0xcc, 0xdd, 0xee}).ToString(),
            "0410-6105-NAXW-SQFE");
  EXPECT_EQ(Code({}, {}).ToString(), "0000-0000-0000-0000");
  EXPECT_EQ(Code({0xff, 0xff, 0xff, 0xff, 0xff}, {0xff, 0xff, 0xff, 0xff, 0xff})
                .ToString(),
            "ZZZZ-ZZZZ-ZZZZ-ZZZZ");

  absl::StatusOr<PairingCode> c = PairingCode::Parse("7KQ2-M9XD-4HTV-B1ZR");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(Hex(c->secret), "3cee2a27ad");
  EXPECT_EQ(Hex(c->tag), "2475b587f8");
}

TEST(PairingCodeTest, ParseAcceptsWhatPeopleType) {
  const std::string canonical = "7KQ2-M9XD-4HTV-B1ZR";
  absl::StatusOr<PairingCode> want = PairingCode::Parse(canonical);
  ASSERT_TRUE(want.ok());
  for (const char* typed : {
           "7kq2-m9xd-4htv-b1zr",     // lowercase
           "7KQ2M9XD4HTVB1ZR",        // no hyphens
           "7KQ2 M9XD 4HTV B1ZR",     // spaces
           "  7KQ2-M9XD 4htvB1ZR  ",  // a mix
           "7KQ2-M9XD-4HTV-BIZR",     // I for 1
           "7KQ2-M9XD-4HTV-BlZR",     // l for 1
           "7KQ2-M9XD-4HTV-BLZR",     // L for 1
           "7-K-Q-2-M-9-X-D-4-H-T-V-B-1-Z-R",
       }) {
    absl::StatusOr<PairingCode> got = PairingCode::Parse(typed);
    ASSERT_TRUE(got.ok()) << typed << ": " << got.status();
    EXPECT_EQ(got->secret, want->secret) << typed;
    EXPECT_EQ(got->tag, want->tag) << typed;
  }
  // O and o for 0.
  absl::StatusOr<PairingCode> zero = PairingCode::Parse("0000-0000-0000-0000");
  absl::StatusOr<PairingCode> oh = PairingCode::Parse("OOOO-oooo-0O0o-0000");
  ASSERT_TRUE(zero.ok());
  ASSERT_TRUE(oh.ok()) << oh.status();
  EXPECT_EQ(oh->secret, zero->secret);
  EXPECT_EQ(oh->tag, zero->tag);
}

TEST(PairingCodeTest, ParseRejectsWhatIsNotACode) {
  for (const char* bad : {
           "",
           "----",
           "7KQ2-M9XD-4HTV-B1Z",    // 15
           "7KQ2-M9XD-4HTV-B1ZR7",  // 17
           "7KQ2-M9XD-4HTV-B1ZU",   // U is not in the alphabet
           "7KQ2-M9XD-4HTV-B1Zu",
           "7KQ2-M9XD-4HTV-B1Z!",
           "7KQ2_M9XD_4HTV_B1ZR",
           "7KQ2-M9XD-4HTV-B1Z\xc3\x9c",
           "7KQ2-M9XD-4HTV-B1ZR\n",
       }) {
    absl::StatusOr<PairingCode> got = PairingCode::Parse(bad);
    ASSERT_FALSE(got.ok()) << bad;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(got.status().message().find(kBadCodeMessage), std::string::npos)
        << got.status();
    EXPECT_NE(got.status().message().find("sidecarctl pair invite"),
              std::string::npos)
        << got.status();
  }
}

// The tag is Trunc40(HMAC-SHA256(S, "sidecar-pair-inviter" || key sha)),
// computed independently with Python's hmac module.
TEST(PairingCodeTest, TagMatchesTheSpecifiedHmac) {
  PairingCode c = Code({1, 2, 3, 4, 5}, {0x57, 0xfa, 0xa3, 0x11, 0x75});
  EXPECT_TRUE(c.MatchesInviter(Counting(0)));
}

TEST(PairingCodeTest, MatchesOnlyTheInviter) {
  Sha256Digest inviter = RandomDigest();
  Sha256Digest other = RandomDigest();
  PairingCode c = PairingCode::Make(inviter);
  EXPECT_TRUE(c.MatchesInviter(inviter));
  EXPECT_FALSE(c.MatchesInviter(other));
  Sha256Digest near = inviter;
  near[31] ^= 1;
  EXPECT_FALSE(c.MatchesInviter(near));
}

TEST(PairingCodeTest, AnySingleBitFlipBreaksTheMatch) {
  Sha256Digest inviter = RandomDigest();
  PairingCode c = PairingCode::Make(inviter);
  for (int bit = 0; bit < 80; ++bit) {
    PairingCode flipped = c;
    uint8_t& byte =
        bit < 40 ? flipped.secret[bit / 8] : flipped.tag[(bit - 40) / 8];
    byte ^= static_cast<uint8_t>(1 << (bit % 8));
    EXPECT_FALSE(flipped.MatchesInviter(inviter)) << "bit " << bit;
  }
}

TEST(PairingCodeTest, ProofsMatchTheSpecifiedHmacs) {
  PairingCode c = Code({1, 2, 3, 4, 5}, {});
  Sha256Digest inviter = Counting(0);
  Sha256Digest joiner = Counting(32);
  EXPECT_EQ(Hex(c.JoinProof(joiner, inviter)),
            "99687d0f49d218ead6d7609e4198bd3f8f180d026dd93a3e1aab2d72c18d4adf");
  EXPECT_EQ(Hex(c.AcceptProof(inviter, joiner)),
            "8ee881c3ce6f2ff81981f6c795e0856c18cce7b6b113ed62dde5883c17e71661");
}

TEST(PairingCodeTest, ProofsAreBoundToSecretKeysAndRole) {
  Sha256Digest inviter = RandomDigest();
  Sha256Digest joiner = RandomDigest();
  Sha256Digest stranger = RandomDigest();
  PairingCode c = PairingCode::Make(inviter);
  PairingCode other_code = PairingCode::Make(inviter);

  std::string join = c.JoinProof(joiner, inviter);
  std::string accept = c.AcceptProof(inviter, joiner);
  EXPECT_EQ(join.size(), 32u);
  EXPECT_EQ(accept.size(), 32u);
  // Same inputs, same proof (the other side recomputes it).
  EXPECT_EQ(join, c.JoinProof(joiner, inviter));
  EXPECT_EQ(accept, c.AcceptProof(inviter, joiner));
  // A join proof cannot be reflected back as the accept proof.
  EXPECT_NE(join, accept);
  // Depends on each key and on their order.
  EXPECT_NE(join, c.JoinProof(stranger, inviter));
  EXPECT_NE(join, c.JoinProof(joiner, stranger));
  EXPECT_NE(join, c.JoinProof(inviter, joiner));
  EXPECT_NE(accept, c.AcceptProof(stranger, joiner));
  EXPECT_NE(accept, c.AcceptProof(inviter, stranger));
  EXPECT_NE(accept, c.AcceptProof(joiner, inviter));
  // And on the secret.
  EXPECT_NE(join, other_code.JoinProof(joiner, inviter));
  EXPECT_NE(accept, other_code.AcceptProof(inviter, joiner));
}

TEST(PairingCodeTest, ProofsEqualComparesWholeProofs) {
  PairingCode c = PairingCode::Make(RandomDigest());
  std::string p = c.JoinProof(RandomDigest(), RandomDigest());
  EXPECT_TRUE(ProofsEqual(p, p));
  EXPECT_TRUE(ProofsEqual(p, std::string(p)));
  for (size_t i = 0; i < p.size(); ++i) {
    std::string q = p;
    q[i] ^= 0x01;
    EXPECT_FALSE(ProofsEqual(p, q)) << i;
  }
  EXPECT_FALSE(ProofsEqual(p, p.substr(0, 31)));
  EXPECT_FALSE(ProofsEqual(p, p + '\0'));
  EXPECT_FALSE(ProofsEqual(p, ""));
  EXPECT_TRUE(ProofsEqual("", ""));
}

}  // namespace
}  // namespace sidecar
