// The public typings (index.d.ts, written by hand for users) against the typings napi generates
// from the Rust boundary (lib/native.d.ts): a field added, renamed or dropped on either side
// without the other fails `tsc`, so the two cannot drift apart unnoticed.
import type { RaftState, MemberInfo, RaftCoordinatorConfig } from '@unrdf/consensus';
import type {
  RaftState as NativeRaftState,
  MemberInfo as NativeMemberInfo,
  Membership as NativeMembership,
  NativeConfig,
  NativeTls,
} from '../../lib/native';

/** `true` only when A and B have exactly the same keys. */
type SameKeys<A, B> = [Exclude<keyof A, keyof B>, Exclude<keyof B, keyof A>] extends [never, never] ? true : false;

// getState() hands the native state over as it is: the same fields, the same value types
// (the public `role` is the native string narrowed to the four roles).
const stateKeys: SameKeys<RaftState, NativeRaftState> = true;
const memberKeys: SameKeys<MemberInfo, NativeMemberInfo> = true;
const membershipKeys: SameKeys<RaftState['membership'], NativeMembership> = true;
const nativeToPublic = (s: NativeRaftState): Omit<RaftState, 'role' | 'replication'> => s;
const publicToNative = (s: RaftState): NativeRaftState => s;

// The native config takes the normalized public config under the same names. What it has
// beyond them is worked out by the coordinator (secrets from `secret`, the delivery settings,
// the log level for the logger), never typed by users.
type WorkedOut = 'secrets' | 'appliedIndex' | 'appSnapshots' | 'logLevel' | 'initialMembers';
type Public = keyof RaftCoordinatorConfig;
const nativeConfigNamesArePublic: Exclude<keyof NativeConfig, Public | WorkedOut> extends never ? true : false = true;
const tlsKeys: SameKeys<NonNullable<RaftCoordinatorConfig['tls']>, NativeTls> = true;

export { stateKeys, memberKeys, membershipKeys, nativeToPublic, publicToNative, nativeConfigNamesArePublic, tlsKeys };
