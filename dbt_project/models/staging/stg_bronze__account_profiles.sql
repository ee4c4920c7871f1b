with

source as (

    select * from {{ source('bronze', 'account_profiles') }}
    -- replay: rebuild from bronze as it stood up to a date (`--vars '{replay_to: 2026-11-01}'`)
    where cast(timezone('UTC', updated_at) as date) <= cast('{{ var("replay_to", "9999-12-31") }}' as date)

),

renamed as (

    select

        ----------  ids (an empty string is a missing id)
        nullif(user_id, '') as user_id,

        ---------- strings
        account_type,
        home_country,

        ---------- numerics
        cast(kyc_level as integer) as kyc_level,

        ---------- timestamps
        cast(signup_time as timestamptz) as signup_time,
        cast(updated_at as timestamptz) as updated_at,

        ---------- lineage
        cast(_batch as bigint) as ingest_batch,
        cast(_ingested_at as timestamptz) as ingested_at

    from source

)

select * from renamed
