import type { ViteUserConfig } from 'vitest/config';

// Sibling workspaces resolve to their TypeScript sources through the `source` export condition.
const conditions = ['source', 'node', 'development|production'];

/** Shared vitest settings for every workspace. */
export const shared: ViteUserConfig = {
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    include: ['tests/**/*.test.ts'],
  },
};
