with

profiles as (

    select * from {{ ref('stg_bronze__account_profiles') }}

),

deduplicated as (

    -- a version read twice (only after a bronze watermark reset) counts once: the first copy
    select * from profiles

    qualify row_number() over (
        partition by user_id, updated_at
        order by ingested_at, ingest_batch
    ) = 1

),

final as (

    select

        ----------  ids
        user_id || '@' || strftime(timezone('UTC', updated_at), '%Y-%m-%dT%H:%M:%S.%fZ')
            as profile_version_id,
        user_id,

        ---------- strings
        account_type,
        home_country,

        ---------- numerics
        kyc_level,

        ---------- timestamps
        signup_time,
        updated_at as valid_from,
        lead(updated_at) over (partition by user_id order by updated_at) as valid_to,

        ---------- lineage
        ingested_at

    from deduplicated

)

select * from final
